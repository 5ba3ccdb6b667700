"""The FastAPI application: it only wires routes to the packages.

``create_app(settings)`` builds an app; ``python -m serving`` runs it with uvicorn.
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.routes import admin, health, prescriptions, review_page, reviews, triage
from training.config import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="rxtriage",
        version="0.1.0",
        description="Triage of patient complaints and review of prescriptions for internet hospitals.",
    )
    app.state.settings = settings
    app.state.api_keys = settings.resolved_api_keys()
    for module in (health, triage, admin, prescriptions, reviews, review_page):
        app.include_router(module.router)
    return app
