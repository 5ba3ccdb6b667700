"""``POST /v1/prescriptions/check``: run the prescription checker; queue what it flags.

A check whose verdict is review or block and whose worst finding is at least
``settings.queue_min_severity`` is stored as a pending review, with its audit entry, in one transaction;
the answer (with ``review_id``) is sent only after that commit.  Every other check is audited too, lightly
(verdict, rule ids, versions, the prescription's sha256; no patient data).  If the database cannot record
the check the answer is 503 and carries no verdict: a flagged prescription is never reported as passed,
and an unrecorded one is never reported at all.

The handler is ``async``: the checker runs in the thread pool and the database write on the database's own
threads with its deadline (``Database.run``), so a frozen database answers 503 within
``RXT_DB_SOCKET_TIMEOUT_S`` and never holds the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from prescription_check.schemas import Prescription
from serving import review_queue
from serving.db.session import DatabaseUnavailable
from serving.deps import CheckerDep, DbDep, PrescriberOrPharmacist, SettingsDep

router = APIRouter(tags=["prescriptions"])


@router.post(
    "/v1/prescriptions/check",
    summary="Check a prescription; flagged ones are queued for a pharmacist",
    responses={503: {"description": "checker not loaded, or the review database cannot record the check"}},
)
async def check_prescription(rx: Prescription, principal: PrescriberOrPharmacist, settings: SettingsDep,
                             checker: CheckerDep, db: DbDep):
    result = (await run_in_threadpool(checker.check, rx)).model_dump(mode="json")

    def store() -> review_queue.CheckRecord:
        with db.session() as session:
            return review_queue.record_check(
                session, prescription=rx.model_dump(mode="json"), result=result,
                actor=f"{principal.role}:{principal.key_id}", queue_min_severity=settings.queue_min_severity,
            )

    try:
        stored = await db.run(store)
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(
            f"the check could not be recorded, so no result is given (do not dispense; retry): {exc}"
        ) from exc
    return {**result, "queued": stored.queued, "review_id": stored.review_id, "audit_id": stored.audit_id}
