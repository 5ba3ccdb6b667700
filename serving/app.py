"""The FastAPI application: it only wires routes to the packages.

``create_app(settings)`` builds an app; ``python -m serving`` runs it with uvicorn.

Start-up and shutdown happen in ``lifespan`` below, one marked section per area.  Shared state
lives on ``app.state``:

- ``settings``, ``api_keys``, ``metrics`` (``serving.metrics.Metrics``, its own registry),
- ``readiness``: dict name -> callable returning ``(ok, detail)``; ``/readyz`` is 200 only when all
  are ok.  Add a component with ``app.state.readiness["kb"] = lambda: (True, "...")``.
- ``triage`` (``serving.triage_service.TriageService``: model holder, red flags, micro-batcher).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serving import errors
from serving.logs import SERVICE_LOGGER, log_event
from serving.metrics import Metrics
from serving.middleware import RequestContextMiddleware
from serving.routes import admin, health, prescriptions, review_page, reviews, triage
from serving.ddi_reload import DDIReloader
from serving.triage_service import TriageService
from training.config import Settings, get_settings

log = logging.getLogger(SERVICE_LOGGER)


async def _poll_models(app: FastAPI, every: float) -> None:
    """Reload a model when its registry alias moves (settings.model_poll_seconds > 0): triage and DDI."""
    service: TriageService = app.state.triage
    pollers = {"triage": service.holder.poll_once, "ddi": app.state.ddi_reloader.poll_once}
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
                app.state.metrics.reloads.labels(model=name, outcome="ok" if result.reloaded else "failed").inc()


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    background: list[asyncio.Task] = []

    # --- startup: triage (model from the registry, red-flag rules, micro-batcher, poller) ----
    service: TriageService = app.state.triage
    # A model that cannot be loaded leaves the service up but not ready (/readyz says why);
    # a reload or the poller can bring it in later.
    await asyncio.gather(asyncio.to_thread(service.holder.load), asyncio.to_thread(service.load_red_flags))
    await service.start()
    # --- end triage startup -----------------------------------------------------------------

    # --- startup: prescription review (review DB, prescription checker) go here ------------
    # review DB (alembic upgrade head), app.state.checker = Checker.load(settings), readiness
    # "database" + "kb", /review session secret: see serving/db/wiring.py (owned by the review queue)
    from serving.db import wiring as review_wiring

    await review_wiring.startup(app)
    # --- end prescription review startup ----------------------------------------------------

    # one poller for both models' registry aliases (after both areas have loaded theirs)
    if settings.model_poll_seconds > 0:
        background.append(asyncio.create_task(_poll_models(app, settings.model_poll_seconds), name="model-poller"))

    try:
        yield
    finally:
        # --- shutdown: prescription review (reverse order of startup) go here --------------
        await review_wiring.shutdown(app)
        # --- end prescription review shutdown -----------------------------------------------

        # --- shutdown: triage ---------------------------------------------------------------
        for task in background:
            task.cancel()
        for task in background:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await service.stop()
        # --- end triage shutdown ------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="rxtriage",
        version="0.1.0",
        description="Triage of patient complaints and review of prescriptions for internet hospitals.\n\n"
        "Authenticate with `Authorization: Bearer <key>` (or `X-API-Key`). Every response carries "
        "`X-Request-ID` (yours if you sent one). Errors are JSON `{detail, errors: [{field, message}], request_id}`.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.api_keys = settings.resolved_api_keys()
    app.state.metrics = Metrics()
    app.state.triage = TriageService(settings, app.state.metrics)
    app.state.ddi_reloader = DDIReloader(app)
    app.state.readiness = {
        "triage_model": app.state.triage.holder.is_ready,
        "red_flags": app.state.triage.red_flags_ready,
    }
    errors.install(app)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    for module in (health, triage, admin, prescriptions, reviews, review_page):
        app.include_router(module.router)
    return app
