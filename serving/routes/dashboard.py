"""The pharmacy lead's dashboard: ``GET /v1/reviews/stats/dashboard`` (JSON) and ``/review/dashboard`` (the page,
charts drawn as inline SVG on the server from the same data), plus the page's alert-tier form (admin role), which
stores the settings through :mod:`serving.tier_settings` exactly as ``PUT /v1/admin/alert-tiers`` does.

This router is included before the review page's, so ``/review/dashboard`` is not read as a review id.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field

from prescription_check.schemas import CATEGORIES
from prescription_check.tiers import PRESETS, QUEUEABLE_TIERS
from serving import dashboard, tier_settings
from serving.db.session import DatabaseUnavailable
from serving.deps import DbDep, PharmacistOrAdmin
from serving.review_queue import ReviewError
from serving.routes.review_page import _csrf_ok, _redirect, _render, current_user
from serving.schemas import error_responses
from serving.state import get_state

router = APIRouter()


class _Tiers(BaseModel):
    model_config = ConfigDict(extra="allow")
    block: int
    review: int
    counsel: int
    info: int
    unknown: int = Field(description="findings of checks recorded before the tiers")


class DayAlerts(_Tiers):
    day: str


class RuleAlerts(_Tiers):
    rule_id: str
    total: int


class Alerts(BaseModel):
    days: list[DayAlerts]
    rules: list[RuleAlerts] = Field(description="the 25 rules with most findings")
    totals: _Tiers
    checks: int
    queued: int
    with_counselling_notes: int
    truncated: bool = Field(description="more checks than the 200,000 newest read")


class Reason(BaseModel):
    reason_code: str
    label: str
    count: int


class RuleOverride(BaseModel):
    rule_id: str
    decided: int
    overridden: int
    override_rate: float | None
    reasons: list[Reason] = Field(description="reason codes of the approvals (overrides), most frequent first")


class Bucket(BaseModel):
    bucket: str
    count: int


class TimeToDecision(BaseModel):
    decided: int
    median_minutes: float | None
    p90_minutes: float | None
    histogram: list[Bucket]


class DayDepth(BaseModel):
    day: str
    pending: int


class QueueDepth(BaseModel):
    now: int
    days: list[DayDepth]


class Window(BaseModel):
    days: int
    from_: str = Field(alias="from")
    to: str


class DashboardResponse(BaseModel):
    window: Window
    alerts: Alerts
    overrides: list[RuleOverride]
    time_to_decision: TimeToDecision
    queue_depth: QueueDepth
EDITABLE_SEVERITIES = ("major", "moderate")  # contraindicated always blocks; minor and info never queue
Days = Annotated[int, Query(ge=1, le=dashboard.MAX_DAYS, description="window in days, ending now")]


@router.get("/v1/reviews/stats/dashboard", tags=["reviews"], responses=error_responses(401, 403, 413, 422, 503),
            response_model=DashboardResponse, response_model_by_alias=True,
            summary="The pharmacy lead's dashboard data: alerts per tier and rule per day, override rates with "
                    "reasons, time from check to decision, queue depth")
async def get_dashboard(db: DbDep, principal: PharmacistOrAdmin, days: Days = 30) -> dict[str, Any]:
    def read():
        with db.session() as session:
            return dashboard.dashboard_data(session, days=days)

    return await db.run(read)


def _grid(queue) -> list[dict[str, Any]]:
    return [{"category": c, "cells": [{"severity": s, "tiers": sorted(queue.queues(c, s))}
                                      for s in EDITABLE_SEVERITIES]} for c in CATEGORIES]


@router.get("/review/dashboard", include_in_schema=False)
async def dashboard_page(request: Request, days: int = 30, saved: int | None = None):
    try:
        user = await current_user(request)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": None, "error": str(exc)}, status_code=503)
    if user is None:
        return _redirect("/review")
    days = max(1, min(days, dashboard.MAX_DAYS))
    db = get_state(request).db

    def read():
        with db.session() as session:
            return dashboard.dashboard_data(session, days=days), tier_settings.read(session)

    try:
        data, stored = await db.run(read)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": user, "error": str(exc)}, status_code=503)
    return _dashboard(request, user, data, stored, days, saved=saved)


def _dashboard(request, user, data, stored, days, *, saved=None, error=None, status_code=200):
    charts = {k: Markup(v) for k, v in dashboard.render_charts(data).items()}  # built with escaped text only
    return _render(request, "review_dashboard.html", {
        "user": user, "data": data, "charts": charts, "days": days, "stored": stored, "grid": _grid(stored.queue),
        "presets": list(PRESETS), "queueable": QUEUEABLE_TIERS, "severities_editable": EDITABLE_SEVERITIES,
        "can_tune": user["role"] == "admin", "saved": saved, "error": error,
    }, status_code=status_code)


@router.post("/review/dashboard/tiers", include_in_schema=False)
async def tune_tiers(request: Request):
    try:
        user = await current_user(request)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": None, "error": str(exc)}, status_code=503)
    if user is None:
        return _redirect("/review")
    form = await request.form()
    if not _csrf_ok(user, str(form.get("csrf", ""))):
        return _render(request, "review_error.html",
                       {"user": user, "error": "The form's security token did not match; reload the page."},
                       status_code=403)
    if user["role"] != "admin":
        return _render(request, "review_error.html",
                       {"user": user, "error": "Only the admin role (pharmacy lead) changes the alert tiers."},
                       status_code=403)
    db = get_state(request).db
    try:
        preset = str(form.get("preset") or "custom")
        if preset in PRESETS:
            queue = tier_settings.resolve(preset, None)
        else:
            cells = {c: {s: [t for t in QUEUEABLE_TIERS if form.get(f"q:{c}:{s}:{t}") == "on"]
                         for s in EDITABLE_SEVERITIES} for c in CATEGORIES}
            queue = tier_settings.resolve(None, {"name": str(form.get("name") or "custom")[:60], "cells": cells})
        version = str(form.get("expected_version") or "").strip()
        note = str(form.get("note") or "")[:500].replace("\x00", "") or None
        stored = await db.run(tier_settings.update, db, queue=queue, actor=f"admin:{user['kid']}",
                              expected_version=int(version) if version.isdigit() else None, note=note)
    except ReviewError as exc:
        def read():
            with db.session() as session:
                return dashboard.dashboard_data(session), tier_settings.read(session)

        data, current = await db.run(read)
        return _dashboard(request, user, data, current, 30, error=exc.detail, status_code=exc.status_code)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": user, "error": str(exc)}, status_code=503)
    get_state(request).checker.apply_queue_settings(stored.queue)
    return _redirect(f"/review/dashboard?saved={stored.queue.version}")
