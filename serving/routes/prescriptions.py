"""``POST /v1/prescriptions/check``: run the prescription checker; queue what it flags.

A check whose verdict is review or block and whose worst finding is at least
``settings.queue_min_severity`` is stored as a pending review, with its audit entry, in one transaction;
the answer (with ``review_id``) is sent only after that commit.  Every other check is audited too, lightly
(verdict, rule ids, versions, the prescription's sha256; no patient data).  If the database cannot record
the check the answer is 503 and carries no verdict: a flagged prescription is never reported as passed,
and an unrecorded one is never reported at all.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from prescription_check.schemas import Prescription
from serving import reviews
from serving.db.session import DatabaseUnavailable
from serving.deps import PrescriberOrPharmacist, SettingsDep
from serving.errors import error_body

router = APIRouter(tags=["prescriptions"])


def unavailable(detail: str, retry_after: int = 5) -> JSONResponse:
    return JSONResponse(error_body(detail), status_code=503, headers={"Retry-After": str(retry_after)})


@router.post(
    "/v1/prescriptions/check",
    summary="Check a prescription; flagged ones are queued for a pharmacist",
    responses={503: {"description": "checker not loaded, or the review database cannot record the check"}},
)
def check_prescription(rx: Prescription, request: Request, principal: PrescriberOrPharmacist,
                       settings: SettingsDep):
    state = request.app.state
    checker = getattr(state, "checker", None)
    if checker is None:
        return unavailable(getattr(state, "checker_error", None) or "prescription checker is not loaded yet")
    db = getattr(state, "db", None)
    if db is None:
        return unavailable("review database is not initialised (the app has not started)")
    result = checker.check(rx).model_dump(mode="json")
    try:
        with db.session() as session:
            stored = reviews.record_check(
                session, prescription=rx.model_dump(mode="json"), result=result,
                actor=f"{principal.role}:{principal.key_id}", queue_min_severity=settings.queue_min_severity,
            )
    except DatabaseUnavailable as exc:
        return unavailable(
            f"the check could not be recorded, so no result is given (do not dispense; retry): {exc}"
        )
    return {**result, "queued": stored.queued, "review_id": stored.review_id, "audit_id": stored.audit_id}
