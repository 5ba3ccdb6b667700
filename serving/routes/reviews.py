"""The pharmacist review queue over HTTP (see docs/review-queue.md).

- ``GET  /v1/reviews``: filter by ``status`` (default pending; ``all``), ``severity`` (repeatable, the
  review's worst finding), ``min_severity``, ``created_from`` / ``created_to`` (ISO date or datetime, UTC);
  ``limit``/``offset``; most severe first, then oldest.  Pharmacist or admin.
- ``GET  /v1/reviews/reason-codes``: the documented reason codes per decision.
- ``GET  /v1/reviews/stats/overrides``: per rule id: decided, overridden, override rate.
- ``GET  /v1/reviews/{id}``: prescription, patient context, findings with evidence and source, audit trail.
- ``POST /v1/reviews/{id}/decision``: ``{decision, reason_code, note, expected_version?}`` with an optional
  ``Idempotency-Key`` header.  Pharmacists only.  409 when someone else decided first; 422 naming the field
  for a missing/unknown reason code or a reused idempotency key.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serving import reviews
from serving.db.session import Database, DatabaseUnavailable
from serving.deps import Pharmacist, PharmacistOrAdmin
from serving.errors import error_body

router = APIRouter(tags=["reviews"])

ReviewId = Annotated[int, Path(ge=1, le=2**31 - 1, description="review id")]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    decision: Literal["approve", "reject", "request_change"]
    reason_code: str | None = Field(default=None, max_length=64, description="see GET /v1/reviews/reason-codes")
    note: str | None = Field(default=None, max_length=reviews.NOTE_MAX_CHARS)
    expected_version: int | None = Field(
        default=None, ge=1, description="the review's version you looked at; 409 if it changed since"
    )


def review_error(exc: reviews.ReviewError) -> JSONResponse:
    errors = [{"field": exc.field, "message": exc.detail}] if exc.field else []
    body = error_body(exc.detail, errors)
    body.update(exc.extra)
    return JSONResponse(body, status_code=exc.status_code)


def db_unavailable(exc: Exception | str) -> JSONResponse:
    return JSONResponse(error_body(str(exc)), status_code=503, headers={"Retry-After": "5"})


def parse_when(value: str | None, field: str) -> datetime | date | None:
    """An ISO-8601 date (a whole day) or datetime (naive = UTC); a clear 422 naming ``field`` otherwise."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError:
        raise reviews.InvalidDecision(
            f"{field} must be an ISO date (2026-11-23) or datetime (2026-11-23T14:00:00Z), not {text[:40]!r}",
            field=field,
        ) from None


When = Annotated[str | None, Query(max_length=40, description="ISO date (a whole day) or datetime; naive = UTC")]


def get_db(request: Request) -> Database:
    db = getattr(request.app.state, "db", None)
    if db is None:
        raise DatabaseUnavailable("review database is not initialised (the app has not started)")
    return db


@router.get("/v1/reviews", summary="The review queue, most severe then oldest first")
def list_queue(
    request: Request,
    principal: PharmacistOrAdmin,
    status: Annotated[Literal["pending", "approved", "rejected", "changes_requested", "all"], Query()] = "pending",
    severity: Annotated[
        list[Literal["contraindicated", "major", "moderate", "minor", "info"]] | None, Query()
    ] = None,
    min_severity: Annotated[Literal["contraindicated", "major", "moderate", "minor", "info"] | None, Query()] = None,
    created_from: When = None,
    created_to: When = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
):
    try:
        start, end = parse_when(created_from, "created_from"), parse_when(created_to, "created_to")
        with get_db(request).session() as session:
            page = reviews.list_reviews(session, status=status, severities=severity, min_severity=min_severity,
                                        created_from=start, created_to=end, limit=limit, offset=offset)
            items = [reviews.review_summary(r) for r in page.items]
    except DatabaseUnavailable as exc:
        return db_unavailable(exc)
    except reviews.ReviewError as exc:
        return review_error(exc)
    next_offset = offset + len(items) if offset + len(items) < page.total else None
    return {"items": items, "total": page.total, "limit": limit, "offset": offset, "next_offset": next_offset}


@router.get("/v1/reviews/reason-codes", summary="Reason codes a decision may carry")
def reason_codes(principal: PharmacistOrAdmin):
    return {
        "reason_codes": [
            {"code": r.code, "label": r.label, "decisions": list(r.decisions), "needs_note": r.needs_note}
            for r in reviews.REASON_CODES.values()
        ],
        "override_reason_required_for": sorted(reviews.OVERRIDE_SEVERITIES),
    }


@router.get("/v1/reviews/stats/overrides", summary="How often pharmacists override each rule")
def override_stats(
    request: Request,
    principal: PharmacistOrAdmin,
    since: When = None,
    until: When = None,
):
    try:
        start, end = parse_when(since, "since"), parse_when(until, "until")
        with get_db(request).session() as session:
            return reviews.override_stats(session, since=start, until=end)
    except DatabaseUnavailable as exc:
        return db_unavailable(exc)
    except reviews.ReviewError as exc:
        return review_error(exc)


@router.get("/v1/reviews/{review_id}", summary="One review with its findings and audit trail")
def get_one(review_id: ReviewId, request: Request, principal: PharmacistOrAdmin):
    try:
        with get_db(request).session() as session:
            return reviews.review_detail(session, reviews.get_review(session, review_id))
    except DatabaseUnavailable as exc:
        return db_unavailable(exc)
    except reviews.ReviewError as exc:
        return review_error(exc)


@router.post(
    "/v1/reviews/{review_id}/decision",
    summary="Approve, reject or request a change (pharmacists)",
    responses={409: {"description": "already decided by someone else"},
               422: {"description": "invalid/missing reason code, or an idempotency key reused for another request"}},
)
def decide(
    review_id: ReviewId,
    body: DecisionIn,
    request: Request,
    principal: Pharmacist,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=reviews.IDEMPOTENCY_KEY_MAX)] = None,
):
    try:
        outcome = reviews.decide(
            get_db(request), review_id, decision=body.decision, actor=f"{principal.role}:{principal.key_id}",
            reason_code=body.reason_code, note=body.note, expected_version=body.expected_version,
            idempotency_key=idempotency_key,
        )
    except DatabaseUnavailable as exc:
        return db_unavailable(exc)
    except reviews.ReviewError as exc:
        return review_error(exc)
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)
