"""``python -m serving [--host 127.0.0.1] [--port 8000] [--no-train] [--model URI_OR_PATH]``

Runs the service on the embedded defaults:

1. If the triage model URI (``RXT_TRIAGE_MODEL_URI``, default
   ``models:/triage-classifier@champion``) does not resolve, trains and registers one first with
   ``training.triage_train.train_triage`` on its defaults and sets the alias (skip with ``--no-train``:
   the service then starts not-ready and says why at ``/readyz``).
2. Likewise for the prescription risk model (``RXT_DDI_MODEL_URI``, default ``models:/ddi-severity@champion``):
   trains and registers it with ``training.ddi_train.train_ddi`` when absent (DDInter and WHO ATC are
   non-commercial sources: see docs/licences.md).  With ``--no-train`` the checker runs rules-only and says
   so in ``/readyz`` and in each response.
3. If no API keys are configured (``RXT_API_KEYS`` / ``RXT_API_KEYS_FILE``), writes random
   development keys, one per role, to ``<work_dir>/api_keys.json`` (mode 0600) and prints where.
4. Starts uvicorn and prints the URL of the interactive docs (``/docs``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from training.config import ROLES, Settings, get_settings


def ensure_api_keys(settings: Settings) -> tuple[Settings, Path | None]:
    """Return settings with keys; writes dev keys (0600) when none are configured."""
    if settings.resolved_api_keys():
        return settings, None
    path = (settings.work_dir / "api_keys.json").resolve()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = {f"dev-{role}-{secrets.token_urlsafe(24)}": role for role in ROLES}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(keys, fh, indent=2)
    os.chmod(path, 0o600)
    return settings.model_copy(update={"api_keys_file": path}), path


def _ensure(settings: Settings, train: bool, *, what: str, uri: str, model_name: str, train_fn, without: str,
            duration: str) -> str:
    """Resolve a model URI; train + register one when its registry alias has none (and allowed)."""
    from training import registry
    from training.registry import ModelNotFoundError, resolve_model_dir

    try:
        folder, version = resolve_model_dir(uri, settings)
        return f"{what} {uri} -> version {version or 'local'} ({folder})"
    except ModelNotFoundError as exc:
        reason = str(exc)
    from serving.model_holder import parse_alias_uri

    alias = parse_alias_uri(uri)
    if not train or alias is None or alias[0] != model_name:
        return f"{what} {uri} not available ({reason}); {without}"
    print(f"[serving] {reason}", file=sys.stderr)
    print(f"[serving] training and registering {model_name} on the embedded defaults (alias {alias[1]}); "
          f"{duration} ...", file=sys.stderr, flush=True)
    result = train_fn(settings, alias=alias[1])
    registry.configure(settings)
    if registry.get_alias_version(model_name, alias[1]) is None and result.version is not None:
        registry.set_alias(model_name, alias[1], str(result.version))
    return f"trained and registered {model_name} version {result.version} as @{alias[1]}"


def ensure_model(settings: Settings, train: bool) -> str:
    """The triage model: without it the service starts not ready."""
    from training.triage_train import TRIAGE_MODEL_NAME, train_triage

    return _ensure(settings, train, what="triage model", uri=settings.triage_model_uri, model_name=TRIAGE_MODEL_NAME,
                   train_fn=train_triage, without="the service starts NOT ready",
                   duration="about 20 minutes on 2 CPU cores")


def ensure_ddi_model(settings: Settings, train: bool) -> str:
    """The DDI risk model: without it prescription checks run rules-only (and say so)."""
    from training.ddi_train import MODEL_NAME, train_ddi

    return _ensure(settings, train, what="ddi model", uri=settings.ddi_model_uri, model_name=MODEL_NAME,
                   train_fn=train_ddi, without="prescription checks run rules-only",
                   duration="about 10 minutes on 2 CPU cores")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-train", action="store_true", help="never train a model at start-up")
    parser.add_argument("--model", help="triage model URI or local folder (overrides RXT_TRIAGE_MODEL_URI)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import uvicorn

    from serving.app import create_app
    from serving.logs import configure_logging

    configure_logging(args.log_level.upper())
    settings = get_settings()
    if args.model:
        settings = settings.model_copy(update={"triage_model_uri": args.model})
    settings, keys_path = ensure_api_keys(settings)
    if keys_path is not None:
        print(f"[serving] no API keys configured: development keys (one per role) are in {keys_path} (mode 0600)", file=sys.stderr)
    print(f"[serving] {ensure_model(settings, train=not args.no_train)}", file=sys.stderr)
    print(f"[serving] {ensure_ddi_model(settings, train=not args.no_train)}", file=sys.stderr)
    print(f"[serving] API docs: http://{args.host}:{args.port}/docs  (readiness: /readyz, metrics: /metrics)", file=sys.stderr, flush=True)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        log_level=args.log_level,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
