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


def ensure_model(settings: Settings, train: bool) -> str:
    """Resolve the triage model; train + register one when the registry has none (and allowed)."""
    from training.registry import ModelNotFoundError, resolve_model_dir

    uri = settings.triage_model_uri
    try:
        folder, version = resolve_model_dir(uri, settings)
        return f"triage model {uri} -> version {version or 'local'} ({folder})"
    except ModelNotFoundError as exc:
        reason = str(exc)
    from serving.model_holder import parse_alias_uri
    from training.triage_train import TRIAGE_MODEL_NAME

    alias = parse_alias_uri(uri)
    if not train or alias is None or alias[0] != TRIAGE_MODEL_NAME:
        return f"triage model {uri} not available ({reason}); the service starts NOT ready"
    from training import registry
    from training.triage_train import train_triage

    print(f"[serving] {reason}", file=sys.stderr)
    print(
        f"[serving] training and registering a triage model on the embedded defaults (alias {alias[1]}); "
        "this takes a while on CPU ...",
        file=sys.stderr,
        flush=True,
    )
    result = train_triage(settings, alias=alias[1])
    registry.configure(settings)
    if registry.get_alias_version(TRIAGE_MODEL_NAME, alias[1]) is None and result.version is not None:
        registry.set_alias(TRIAGE_MODEL_NAME, alias[1], str(result.version))
    return f"trained and registered {TRIAGE_MODEL_NAME} version {result.version} as @{alias[1]}"


def ensure_ddi_model(settings: Settings, train: bool) -> str:
    """Resolve the DDI risk model; train + register one when the registry has none (and allowed)."""
    from training.registry import ModelNotFoundError, resolve_model_dir

    uri = settings.ddi_model_uri
    try:
        folder, version = resolve_model_dir(uri, settings)
        return f"ddi model {uri} -> version {version or 'local'} ({folder})"
    except ModelNotFoundError as exc:
        reason = str(exc)
    from serving.model_holder import parse_alias_uri
    from training.ddi_train import MODEL_NAME

    alias = parse_alias_uri(uri)
    if not train or alias is None or alias[0] != MODEL_NAME:
        return f"ddi model {uri} not available ({reason}); prescription checks run rules-only"
    from training.ddi_train import train_ddi

    print(f"[serving] {reason}", file=sys.stderr)
    print(f"[serving] training and registering the ddi-severity model (alias {alias[1]}); about 10 minutes on 2 cores ...",
          file=sys.stderr, flush=True)
    result = train_ddi(settings, alias=alias[1])
    return f"trained and registered {MODEL_NAME} version {result.version} as @{alias[1]}"


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
