"""``POST /v1/prescriptions/check``: run the prescription checker; queue what it flags.

A check whose verdict is review or block and whose worst finding is at least
``settings.queue_min_severity`` is stored as a pending review, with its audit entry, in one transaction;
the answer (with ``review_id``) is sent only after that commit.  Every other check is audited too, lightly
(verdict, rule ids, versions, the prescription's sha256; no patient data).  If the database cannot record
the check the answer is 503 and carries no verdict: a flagged prescription is never reported as passed,
and an unrecorded one is never reported at all.  An ``Idempotency-Key`` header makes a retry (after a timeout or a
503) safe: the first answer is stored with the key and returned again, the check is recorded once.

The handler is ``async``: the checker runs in the thread pool and the database write on the database's own
threads with its deadline (``Database.run``), so a frozen database answers 503 within
``RXT_DB_SOCKET_TIMEOUT_S`` and never holds the event loop.  With ``RXT_DB_GROUP_COMMIT`` (the default) the write
goes through this process's single writer, which records concurrent checks in one transaction
(``serving.group_commit``); the answer still waits for its commit.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from prescription_check.schemas import Prescription
from serving import group_commit, review_queue
from serving.db.session import DatabaseUnavailable
from serving.deps import CheckerDep, DbDep, PrescriberOrPharmacist, SettingsDep
from serving.review_schemas import CheckResponse
from serving.schemas import error_responses

router = APIRouter(tags=["prescriptions"])


@router.post(
    "/v1/prescriptions/check",
    summary="Check a prescription; flagged ones are queued for a pharmacist",
    response_model=CheckResponse,
    responses=error_responses(400, 401, 403, 413, 422, 503),
)
async def check_prescription(
    rx: Prescription, principal: PrescriberOrPharmacist, settings: SettingsDep, checker: CheckerDep, db: DbDep,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", max_length=review_queue.IDEMPOTENCY_KEY_MAX,
        description="Makes a retry safe: the same key with the same prescription returns the first answer "
        "(header `Idempotent-Replayed: true`) without recording the check twice; with another prescription 422.",
    )] = None,
):
    key = review_queue.clean_idempotency_key(idempotency_key)
    result = (await run_in_threadpool(checker.check, rx)).model_dump(mode="json")
    actor = f"{principal.role}:{principal.key_id}"
    try:
        if settings.db_group_commit:
            job = review_queue.CheckJob(rx.model_dump(mode="json"), result, actor, settings.queue_min_severity)
            outcome = await group_commit.committer_for(db, settings.db_group_commit_max).submit(job, key)
        else:
            outcome = await db.run(
                review_queue.record_check_once, db, prescription=rx.model_dump(mode="json"), result=result,
                actor=actor, queue_min_severity=settings.queue_min_severity, idempotency_key=key,
            )
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(
            f"the check could not be recorded, so no result is given (do not dispense; retry): {exc}"
        ) from exc
    return JSONResponse(outcome.body, headers={"Idempotent-Replayed": "true"} if outcome.replayed else None)
