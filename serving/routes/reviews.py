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

Handlers are ``async`` and run their database work through ``Database.run`` (its own threads, a deadline).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from prescription_check.schemas import Severity, Text
from serving import review_queue
from serving.deps import DbDep, Pharmacist, PharmacistOrAdmin
from serving.review_schemas import (
    DecisionResponse,
    OverrideStatsResponse,
    ReasonCodesResponse,
    ReviewDetail,
    ReviewPage,
)
from serving.schemas import error_responses

# every review endpoint: authenticated, may be refused for size or input, depends on the database
router = APIRouter(tags=["reviews"], responses=error_responses(401, 403, 413, 422, 503))

ReviewId = Annotated[int, Path(ge=1, le=2**31 - 1, description="review id")]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    decision: Literal["approve", "reject", "request_change"]
    reason_code: Text | None = Field(default=None, max_length=64, description="see GET /v1/reviews/reason-codes")
    note: Text | None = Field(default=None, max_length=review_queue.NOTE_MAX_CHARS)
    expected_version: int | None = Field(
        default=None, ge=1, description="the review's version you looked at; 409 if it changed since"
    )


def parse_when(value: str | None, field: str) -> datetime | date | None:
    """An ISO-8601 date (a whole day) or datetime (naive = UTC, returned in UTC); a clear 422 naming ``field``
    otherwise, also for a moment that has no UTC equivalent (``0001-01-01T00:00+23:59`` is before year 1 in UTC)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return review_queue.to_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        raise review_queue.InvalidDecision(
            f"{field} must be an ISO date (2026-11-23) or datetime (2026-11-23T14:00:00Z) between years 1 and "
            f"9999 in UTC, not {text[:40]!r}",
            field=field,
        ) from None


When = Annotated[str | None, Query(max_length=40, description="ISO date (a whole day) or datetime; naive = UTC")]


@router.get("/v1/reviews", summary="The review queue, most severe then oldest first", response_model=ReviewPage)
async def list_reviews(
    db: DbDep,
    principal: PharmacistOrAdmin,
    status: Annotated[Literal["pending", "approved", "rejected", "changes_requested", "all"], Query()] = "pending",
    severity: Annotated[
        list[Severity] | None, Query()
    ] = None,
    min_severity: Annotated[Severity | None, Query()] = None,
    created_from: When = None,
    created_to: When = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
):
    start, end = parse_when(created_from, "created_from"), parse_when(created_to, "created_to")

    def read():
        with db.session() as session:
            page = review_queue.list_reviews(session, status=status, severities=severity, min_severity=min_severity,
                                             created_from=start, created_to=end, limit=limit, offset=offset)
            return page, [review_queue.review_summary(r) for r in page.items]

    page, items = await db.run(read)
    next_offset = offset + len(items) if offset + len(items) < page.total else None
    return {"items": items, "total": page.total, "limit": limit, "offset": offset, "next_offset": next_offset}


@router.get("/v1/reviews/reason-codes", summary="Reason codes a decision may carry",
            response_model=ReasonCodesResponse)
async def list_reason_codes(principal: PharmacistOrAdmin):
    return {
        "reason_codes": [
            {"code": r.code, "label": r.label, "decisions": list(r.decisions), "needs_note": r.needs_note}
            for r in review_queue.REASON_CODES.values()
        ],
        "override_reason_required_for": sorted(review_queue.OVERRIDE_SEVERITIES),
    }


@router.get("/v1/reviews/stats/overrides", summary="How often pharmacists override each rule",
            response_model=OverrideStatsResponse)
async def get_override_stats(
    db: DbDep,
    principal: PharmacistOrAdmin,
    since: When = None,
    until: When = None,
):
    start, end = parse_when(since, "since"), parse_when(until, "until")

    def read():
        with db.session() as session:
            return review_queue.override_stats(session, since=start, until=end)

    return await db.run(read)


@router.get("/v1/reviews/{review_id}", summary="One review with its findings and audit trail",
            response_model=ReviewDetail, responses=error_responses(404))
async def get_review(review_id: ReviewId, db: DbDep, principal: PharmacistOrAdmin):
    def read():
        with db.session() as session:
            return review_queue.review_detail(session, review_queue.get_review(session, review_id))

    return await db.run(read)


@router.post(
    "/v1/reviews/{review_id}/decision",
    summary="Approve, reject or request a change (pharmacists)",
    response_model=DecisionResponse,
    responses=error_responses(400, 404, 409),
)
async def decide_review(
    review_id: ReviewId,
    body: DecisionIn,
    db: DbDep,
    principal: Pharmacist,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=review_queue.IDEMPOTENCY_KEY_MAX)] = None,
):
    outcome = await db.run(
        review_queue.decide, db, review_id, decision=body.decision, actor=f"{principal.role}:{principal.key_id}",
        reason_code=body.reason_code, note=body.note, expected_version=body.expected_version,
        idempotency_key=idempotency_key,
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)
