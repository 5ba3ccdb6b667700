"""``POST /v1/triage/outcomes`` and ``DELETE /v1/triage/outcomes/{request_id}`` (roles: chat, clinician, admin).

Where the patient was actually seen, for one triage answer; logic in ``serving.feedback``."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import DbDep, OutcomeReporter, StateDep
from serving.feedback import remove_outcome, submit_outcome
from serving.feedback_schemas import OutcomeDeleted, OutcomeRequest, OutcomeResponse
from serving.schemas import ErrorResponse, error_responses

router = APIRouter(tags=["triage"])

_ERRORS = {
    **error_responses(400, 401, 403, 413, 422, 503),
    404: {"model": ErrorResponse, "description": "No triage answer with this request id is on record (never "
          "answered here, recording off, or purged)."},
    409: {"model": ErrorResponse, "description": "This request id already has a different outcome (DELETE it first)."},
    410: {"model": ErrorResponse, "description": "The answer is older than RXT_FEEDBACK_OUTCOME_DAYS."},
}


@router.post("/v1/triage/outcomes", response_model=OutcomeResponse, responses=_ERRORS,
             summary="Record where the patient was actually seen, for one triage answer",
             description="Idempotent per `request_id`: the same body again answers the same (`created: false`); "
             "a different body is a 409. `actual_center` must be a taxonomy center and `clinician_urgency` an "
             "urgency level (else 422). Complaint text is never sent here.")
async def record_triage_outcome(body: OutcomeRequest, principal: OutcomeReporter, state: StateDep,
                                db: DbDep) -> OutcomeResponse:
    answer = await submit_outcome(db, state.triage.feedback, state.settings, state.triage.taxonomy, state.metrics,
                                  body.request_id, body.actual_center, body.clinician_urgency,
                                  f"{principal.role}:{principal.key_id}")
    return OutcomeResponse(**answer)


@router.delete("/v1/triage/outcomes/{request_id}", response_model=OutcomeDeleted,
               responses={k: v for k, v in _ERRORS.items() if k not in (409, 410)},
               summary="Delete one answer's outcome and its stored complaint text",
               description="The outcome row, the kept text and the embedding sketch go; the text's sha256 and the "
               "prediction stay (they identify no one by themselves).")
async def delete_triage_outcome(request_id: str, _: OutcomeReporter, db: DbDep) -> OutcomeDeleted:
    return OutcomeDeleted(**await remove_outcome(db, request_id))
