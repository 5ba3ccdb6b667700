"""Start-up and shutdown of the prescription-review side of the app (called from ``serving/app.py``).

- ``app.state.db``: :class:`serving.db.Database` on ``settings.resolved_database_url()``; ``alembic upgrade
  head`` runs at start-up.  A database that is down at start-up does not stop the app: readiness says so,
  check and queue endpoints answer 503, and the migration is retried on the next request.
- ``app.state.checker``: ``prescription_check.Checker.load(settings)`` unless a checker was put there before
  start-up (tests share one loaded checker between apps).  If it cannot be imported or loaded,
  ``app.state.checker_error`` says why, the check endpoint answers 503 with that reason, readiness "kb" is
  false.
- readiness entries ``database``, ``kb`` and ``ddi_model`` (ok either way: without a model the checker runs
  rules-only and the detail says ``degraded: rules-only: <why>``).
- ``app.state.review_session_secret``: signs the /review page's session cookie (see
  ``serving.routes.review_page.session_secret``).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from serving.db.models import SEVERITIES
from serving.db.session import Database, DatabaseUnavailable, describe

log = logging.getLogger("rxtriage.serving")


def _load_checker(settings):
    try:
        from prescription_check import Checker
    except ImportError as exc:
        raise RuntimeError(f"prescription checker not installed (prescription_check.Checker: {exc})") from exc
    return Checker.load(settings)


async def startup(app: FastAPI) -> None:
    settings = app.state.settings
    if settings.queue_min_severity not in SEVERITIES:
        raise ValueError(f"RXT_QUEUE_MIN_SEVERITY must be one of {', '.join(SEVERITIES)}, "
                         f"not {settings.queue_min_severity!r}")
    from serving.routes.review_page import session_secret

    app.state.review_session_secret = session_secret(settings)
    db = Database(settings.resolved_database_url())
    app.state.db = db
    try:
        await asyncio.to_thread(db.ensure_ready)
    except DatabaseUnavailable as exc:
        log.error("review database not ready at start-up (retried on first use): %s", exc)
    if getattr(app.state, "checker", None) is None:
        app.state.checker = None
        try:
            app.state.checker = await asyncio.to_thread(_load_checker, settings)
            app.state.checker_error = None
        except Exception as exc:  # noqa: BLE001 - reported through readiness and 503s, never hidden
            app.state.checker_error = f"prescription checker failed to load: {exc.__class__.__name__}: {exc}"
            log.error("%s", app.state.checker_error)
    else:
        app.state.checker_error = None

    def kb_ready() -> tuple[bool, str]:
        checker = getattr(app.state, "checker", None)
        if checker is None:
            return False, getattr(app.state, "checker_error", None) or "prescription checker not loaded"
        return True, f"kb {getattr(checker, 'kb_version', '?')}"

    readiness = getattr(app.state, "readiness", None)
    if readiness is None:
        readiness = app.state.readiness = {}
    def ddi_model_state() -> tuple[bool, str]:
        # rules-only is a supported, degraded mode: ready, and the detail says so (each check response
        # repeats it in model_status)
        checker = getattr(app.state, "checker", None)
        if checker is None:
            return False, "prescription checker not loaded"
        if getattr(checker, "ddi", None) is None:
            return True, f"degraded: {checker.model_status}"
        return True, f"ddi-severity {checker.model_version or '?'}"

    readiness["database"] = db.ping
    readiness["kb"] = kb_ready
    readiness["ddi_model"] = ddi_model_state
    log.info("review queue on %s (%s)", describe(db.url), db.dialect)


async def shutdown(app: FastAPI) -> None:
    db = getattr(app.state, "db", None)
    if db is not None:
        await asyncio.to_thread(db.dispose)
