"""Multi-process serving: ``python -m serving --workers N`` (``scripts/run --workers N``, default: one per core).

uvicorn's process manager runs N worker processes on one listening socket; each builds its own app
(:func:`create_worker_app`, from the environment), so each has its own onnxruntime sessions, micro-batcher, review
database pool and group-commit writer.  Before the workers start, the parent (:func:`prepare`):

- runs the review database's migrations once (``alembic upgrade head``) and tells the workers not to
  (``RXT_DB_MIGRATE=false``); if the database is down then, the workers migrate on first use as a single process
  does;
- gives every worker one onnxruntime intra-op thread (``RXT_ORT_INTRA_OP_THREADS=1``, unless set): N processes
  with 2 threads each on N cores would oversubscribe the CPU;
- switches Prometheus to multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` (default ``<work_dir>/prometheus``)
  is emptied and every worker writes its samples there; ``GET /metrics`` on any worker aggregates all of them
  (counters and histograms summed, gauges per live worker or summed: ``serving.metrics``);
- passes settings given on the command line (``--model``, development API keys) as ``RXT_*`` variables.

Every worker polls the registry aliases on its own (``RXT_MODEL_POLL_SECONDS``; ``scripts/run`` sets 15 s when
unset), so after a promotion all of them converge on the new champion within one poll interval; ``/readyz``
names the answering worker's pid and the model versions it serves.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from serving.app import create_app
from serving.db.session import Database, DatabaseUnavailable, DbTimeouts
from serving.settings import Settings, get_settings

__all__ = ["create_worker_app", "default_workers", "prepare"]


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def prepare(settings: Settings, workers: int) -> dict[str, str]:
    """Set up the environment the worker processes inherit (see the module docstring); returns what was set."""
    env: dict[str, str] = {}
    # migrations once, here
    db = Database(settings.resolved_database_url(), DbTimeouts.from_settings(settings))
    try:
        db.ensure_ready()
        env["RXT_DB_MIGRATE"] = "false"
    except DatabaseUnavailable as exc:
        print(f"[serving] review database not migrated before the workers start ({exc}); each worker retries",
              flush=True)
    finally:
        db.dispose()
    if workers > 1 and not os.environ.get("RXT_ORT_INTRA_OP_THREADS"):
        env["RXT_ORT_INTRA_OP_THREADS"] = "1"
    prom = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.work_dir / "prometheus").resolve()
    if prom.exists():
        shutil.rmtree(prom)  # samples of an earlier run (dead pids) must not be summed in
    prom.mkdir(parents=True, exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    os.environ.update(env)
    return env


def create_worker_app():
    """The app of one worker process (uvicorn ``factory=True``): settings from the environment."""
    get_settings.cache_clear()
    return create_app(get_settings(), freeze_gc=True)
