"""``python -m serving [--host 127.0.0.1] [--port 8000] [--model URI_OR_PATH]``

Serves; trains and builds nothing (``python -m training bootstrap`` does that first in ``scripts/run``):

1. If no API keys are configured (``RXT_API_KEYS`` / ``RXT_API_KEYS_FILE``), writes random
   development keys, one per role, to ``<work_dir>/api_keys.json`` (mode 0600) and prints where.
2. Starts uvicorn and prints the URL of the interactive docs (``/docs``).
"""

from __future__ import annotations

import sys

# Before any other import, and only when run as the service (`python -m serving`; tests that import this module
# must keep torch): the service never needs torch (its models are ONNX, run by onnxruntime), but when torch is
# installed (the dev/CI env, which has the `train` extra) spaCy's thinc imports it on `import spacy`, which maps
# libtorch into the process: ~180 MB more RSS and ~1.8 s more start-up (benchmarks/serving_footprint.py).  A
# None entry in sys.modules makes `import torch` raise ImportError, which thinc (like anything else probing for
# torch) takes as "not installed".  The serving-only install (`scripts/setup --serve-only DIR`, no `train`
# extra) has no torch at all.  tests/serving/test_footprint.py checks that no torch library is mapped; see
# docs/architecture.md, Packaging.
# (The worker processes of --workers N get the same guard in serving/worker_app.py.)
if __name__ == "__main__":
    sys.modules.setdefault("torch", None)

import argparse
import json
import os
import secrets
from pathlib import Path

from serving.app import create_app
from serving.logs import configure_logging
from serving.settings import ROLES, Settings, get_settings
from serving.workers import prepare


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", help="triage model URI or local folder (overrides RXT_TRIAGE_MODEL_URI)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default RXT_WORKERS, 1; scripts/run: one per core); each loads "
                        "its own models; migrations run once before they start (serving.workers)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import uvicorn

    configure_logging(args.log_level.upper())
    settings = get_settings()
    if args.model:
        settings = settings.model_copy(update={"triage_model_uri": args.model})
    settings, keys_path = ensure_api_keys(settings)
    if keys_path is not None:
        print(f"[serving] no API keys configured: development keys (one per role) are in {keys_path} (mode 0600)", file=sys.stderr)
    print(f"[serving] API docs: http://{args.host}:{args.port}/docs  (readiness: /readyz, metrics: /metrics)", file=sys.stderr, flush=True)
    workers = args.workers if args.workers is not None else settings.workers
    if workers > 1:
        # the workers build their apps from the environment: pass what the command line changed
        if args.model:
            os.environ["RXT_TRIAGE_MODEL_URI"] = args.model
        if keys_path is not None:
            os.environ["RXT_API_KEYS_FILE"] = str(keys_path)
        prepare(settings, workers)
        print(f"[serving] {workers} worker processes (one onnxruntime session each)", file=sys.stderr, flush=True)
        # a worker loading its models on a busy machine can miss uvicorn's default 5 s health ping and be killed
        uvicorn.run("serving.worker_app:create", factory=True, workers=workers, host=args.host, port=args.port,
                    log_config=None, access_log=False, log_level=args.log_level, timeout_worker_healthcheck=60)
        return 0
    uvicorn.run(
        create_app(settings, freeze_gc=True),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        log_level=args.log_level,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
