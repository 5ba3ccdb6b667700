"""Typed dependencies used by the route modules (FastAPI ``Annotated`` style).

The getters are ``async`` and trivial, so they run on the event loop (no threadpool hop per request).
``CheckerDep`` raises :class:`serving.checker_service.CheckerUnavailable` when no checker is loaded; the error
handlers turn it (and :class:`serving.db.session.DatabaseUnavailable`) into a 503 with ``Retry-After``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from prescription_check import Checker
from serving.db.session import Database
from serving.metrics import Metrics
from serving.security import Principal, require_roles
from serving.settings import Settings
from serving.state import ServiceState, get_state
from serving.triage_service import TriageService


async def _state(request: Request) -> ServiceState:
    return get_state(request)


async def _settings(request: Request) -> Settings:
    return get_state(request).settings


async def _triage(request: Request) -> TriageService:
    return get_state(request).triage


async def _checker(request: Request) -> Checker:
    return get_state(request).checker.require()


async def _db(request: Request) -> Database:
    return get_state(request).db


async def _metrics(request: Request) -> Metrics:
    return get_state(request).metrics


StateDep = Annotated[ServiceState, Depends(_state)]
SettingsDep = Annotated[Settings, Depends(_settings)]
TriageDep = Annotated[TriageService, Depends(_triage)]
CheckerDep = Annotated[Checker, Depends(_checker)]
DbDep = Annotated[Database, Depends(_db)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]

ChatUser = Annotated[Principal, Depends(require_roles("chat", "admin"))]
CHECK_ROLES = ("prescriber", "pharmacist", "admin")  # who may check prescriptions (also the check route's fast path)
PrescriberOrPharmacist = Annotated[Principal, Depends(require_roles(*CHECK_ROLES))]
Pharmacist = Annotated[Principal, Depends(require_roles("pharmacist"))]
PharmacistOrAdmin = Annotated[Principal, Depends(require_roles("pharmacist", "admin"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
AdminOrML = Annotated[Principal, Depends(require_roles("admin", "ml"))]
OutcomeReporter = Annotated[Principal, Depends(require_roles("chat", "clinician", "admin"))]
