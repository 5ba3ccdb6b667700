"""The FastAPI application: it only wires routes to the packages.

``create_app(settings, checker=None, *, freeze_gc=False)`` builds an app (``checker``: an already loaded
``prescription_check.Checker`` to use instead of loading one, for tests and benchmarks); ``python -m serving``
runs it with uvicorn.  The runtime state is one typed :class:`serving.state.ServiceState` at ``app.state.rxt``;
routes take it through the dependencies in ``serving.deps``.

Start-up (``lifespan``): the triage model and red-flag rules, the micro-batcher; the review database (``alembic
upgrade head``; a database that is down does not stop the app: readiness says so and DB-backed endpoints answer
503), the prescription checker and its DDI model; the /review session secret; one poller for both models'
registry aliases when ``settings.model_poll_seconds > 0``.  Nothing is trained or built here: that is
``python -m training bootstrap``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from prescription_check import Checker
from prescription_check.schemas import SEVERITIES
from serving import errors
from serving import group_commit
from serving.checker_service import CheckerService
from serving.db.session import Database, DatabaseUnavailable, DbTimeouts, describe
from serving.logs import SERVICE_LOGGER, log_event
from serving.metrics import Metrics
from serving.middleware import BodyLimitMiddleware, RequestContextMiddleware, SecurityHeadersMiddleware
from serving.routes import admin, alert_tiers, dashboard, docs, health, outcomes, prescriptions, review_page, reviews, triage
from serving.routes import cds_hooks as cds_hooks_routes
from serving.security import session_secret
from serving.settings import Settings, get_settings
from serving.state import ServiceState
from serving.triage_service import TriageService

log = logging.getLogger(SERVICE_LOGGER)


async def _poll_models(state: ServiceState, every: float) -> None:
    """Reload a model when its registry alias moves: triage and DDI."""
    pollers = {"triage": state.triage.holder.poll_once, "ddi": state.checker.poll_ddi}
    if state.triage.shadow is not None and state.triage.shadow.enabled:
        pollers["challenger"] = state.triage.shadow.poll_once
    while True:
        await asyncio.sleep(every)
        for name, poll in pollers.items():
            try:
                result = await asyncio.to_thread(poll)
            except Exception as exc:  # noqa: BLE001 - a registry hiccup must not kill the poller
                log_event(log, "model poll failed", level=logging.WARNING, model=name,
                          error=f"{exc.__class__.__name__}: {exc}")
                continue
            if result is not None:
                state.metrics.reloads.labels(model=name, outcome="ok" if result.reloaded else "failed").inc()


async def _refresh_tiers(state: ServiceState) -> None:
    """Apply the pharmacist lead's stored alert-tier settings (a database that is down: the last applied ones)."""
    try:
        await state.db.run(state.checker.refresh_queue_settings, state.db)
    except Exception as exc:  # noqa: BLE001 - the poller retries; checks keep the settings they have
        log_event(log, "alert-tier settings not read", level=logging.WARNING, error=f"{exc.__class__.__name__}: {exc}")


async def _poll_tiers(state: ServiceState, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await _refresh_tiers(state)


@asynccontextmanager
async def lifespan(app: FastAPI):
    state: ServiceState = app.state.rxt
    settings = state.settings
    if settings.queue_min_severity not in SEVERITIES:
        raise ValueError(f"RXT_QUEUE_MIN_SEVERITY must be one of {', '.join(SEVERITIES)}, "
                         f"not {settings.queue_min_severity!r}")
    background: list[asyncio.Task] = []

    # triage: a model that cannot be loaded leaves the service up but not ready (/readyz says why); a reload
    # or the poller can bring it in later
    await asyncio.gather(asyncio.to_thread(state.triage.holder.load),
                         asyncio.to_thread(state.triage.load_red_flags))
    await state.triage.start()
    await state.triage.start_feedback()  # answers recorded for outcomes; the shadow challenger (issue 15)

    # prescription review: session secret, database, checker (+ DDI model)
    state.session_secret = session_secret(settings)
    try:
        await state.db.run(state.db.ensure_ready, timeout=max(30.0, settings.db_socket_timeout_s))
    except DatabaseUnavailable as exc:
        log.error("review database not ready at start-up (retried on first use): %s", exc)
    await asyncio.to_thread(state.checker.load)
    await _refresh_tiers(state)
    log.info("review queue on %s (%s)", describe(state.db.url), state.db.dialect)
    if state.freeze_gc:
        # The knowledge base, models and libraries loaded above are ~700,000 objects that live as long as the
        # process; every full collection of the cyclic GC walked them all (~0.1-0.5 s with the event loop
        # stopped: the p99 of the prescription-check load benchmark, issue #16).  Frozen, the collector skips
        # them (reference counting still frees what is dropped later).  Only in the served process (the entry
        # points pass freeze_gc=True), not in tests that build many apps in one process.
        gc.collect()
        gc.freeze()

    if settings.tier_settings_poll_s > 0:
        background.append(asyncio.create_task(_poll_tiers(state, settings.tier_settings_poll_s), name="tier-poller"))
    if settings.model_poll_seconds > 0:
        background.append(asyncio.create_task(_poll_models(state, settings.model_poll_seconds), name="model-poller"))
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        for task in background:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await state.triage.stop_feedback()  # writes what is queued before the database goes
        await group_commit.stop_committer(state.db)
        await asyncio.to_thread(state.db.dispose)
        await state.triage.stop()


class RxtApp(FastAPI):
    """FastAPI, with ``POST /v1/prescriptions/check`` sent to its :class:`serving.routes.prescriptions.CheckLane`
    (issue #16): the busiest endpoint skips the generic per-request stack; everything else goes through it."""

    check_lane = None

    async def __call__(self, scope, receive, send) -> None:
        lane = self.check_lane
        if (lane is not None and scope["type"] == "http" and scope["path"] == prescriptions.CHECK_PATH
                and scope["method"] == "POST" and not self.root_path and not scope.get("root_path")):
            await lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, checker: Checker | None = None, *, freeze_gc: bool = False) -> FastAPI:
    settings = settings or get_settings()
    if settings.blas_threads:
        # process-wide and lasting (not a context): every later numpy product of this worker uses it
        threadpool_limits(limits=settings.blas_threads, user_api="blas")
    app = RxtApp(
        title="rxtriage",
        version="0.1.0",
        description="Triage of patient complaints and review of prescriptions for internet hospitals.\n\n"
        "Authenticate with `Authorization: Bearer <key>` (or `X-API-Key`). Every response carries "
        "`X-Request-ID` (yours if you sent one). Errors are JSON `{detail, errors: [{field, message}], request_id}`.",
        lifespan=lifespan,
        docs_url=None,  # served by serving.routes.docs from the local swagger-ui bundle (no CDN)
        redoc_url=None,
        # clean operation ids (the handler's name: check_prescription, list_reviews ...) for generated clients
        generate_unique_id_function=lambda route: route.name,
    )
    metrics = Metrics()
    state = ServiceState(
        settings=settings, api_keys=settings.resolved_api_keys(), metrics=metrics,
        triage=TriageService(settings, metrics), checker=CheckerService(settings, checker),
        db=Database(settings.resolved_database_url(), DbTimeouts.from_settings(settings)), freeze_gc=freeze_gc,
    )
    if not settings.db_migrate:
        state.db.assume_migrated()
    state.triage.enable_feedback(state.db)
    state.readiness.update({
        "triage_model": state.triage.holder.is_ready,
        "red_flags": state.triage.red_flags_ready,
        "database": state.db.ping_async,  # async: off the event loop, bounded
        "kb": state.checker.kb_ready,
        "ddi_model": state.checker.ddi_ready,
    })
    app.state.rxt = state
    errors.install(app)
    # the last added runs first: /review security headers (on every status, the 500 included), request id /
    # access log / last-resort 500, the body limit, then routing and auth
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    shadow = state.triage.shadow
    app.add_middleware(RequestContextMiddleware, metrics=metrics,
                       activity=shadow.activity if shadow is not None and shadow.enabled else None)
    app.add_middleware(SecurityHeadersMiddleware)
    # the prescription check first: routes are matched in this order, and it is the busiest endpoint (issue #16)
    for module in (prescriptions, health, triage, outcomes, admin, alert_tiers, reviews, dashboard, review_page, docs):
        app.include_router(module.router)
    app.include_router(cds_hooks_routes.router)
    # the check's own front: the same request-id / log / metrics / 500 and body-limit middleware around it
    app.check_lane = prescriptions.CheckLane(
        app, super(RxtApp, app).__call__,
        lambda endpoint: RequestContextMiddleware(
            BodyLimitMiddleware(endpoint, max_bytes=settings.max_request_bytes), metrics=metrics,
            activity=shadow.activity if shadow is not None and shadow.enabled else None))
    return app
