"""CDS Hooks endpoints (docs/cds-hooks.md): discovery, the order-select / order-sign services, feedback.

- ``GET  /cds-services``: the services and their prefetch templates.
- ``POST /cds-services/{service_id}``: a hook call -> ``{"cards": [...]}``; the cards are stored (uuid -> rule) with
  a ``cds.hook`` audit entry before the answer is sent (database down: 503, no cards).
- ``POST /cds-services/{service_id}/feedback``: accepted / overridden outcomes -> audit log + override statistics.

Every endpoint takes the EHR's signed JWT or an API key (``serving.cds_auth``).  Errors are OperationOutcome-like
bodies naming the path (``serving.errors``).  Bodies are read as JSON here (not by FastAPI) so that a malformed one
is a 400 OperationOutcome as CDS clients expect, not the project's 422.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from serving import cds_hooks
from serving.cds_auth import CdsCaller, cds_caller
from serving.deps import CheckerDep, DbDep, SettingsDep
from serving.schemas import error_responses

router = APIRouter(tags=["cds-hooks"])
Caller = Annotated[CdsCaller, Depends(cds_caller)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Coding(_Open):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CdsService(_Open):
    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] = Field(default_factory=dict)
    usageRequirements: str | None = None
    version: str | None = None
    hookVersion: str | None = None


class DiscoveryResponse(BaseModel):
    services: list[CdsService]


class Card(_Open):
    uuid: str | None = None
    summary: str = Field(max_length=140)
    detail: str | None = None
    indicator: str
    source: dict[str, Any]
    suggestions: list[dict[str, Any]] | None = None
    selectionBehavior: str | None = None
    overrideReasons: list[Coding] | None = None
    links: list[dict[str, Any]] | None = None


class CardsResponse(BaseModel):
    cards: list[Card]


class FeedbackResponse(BaseModel):
    received: int
    stored: int
    duplicates: int
    audit_ids: list[int]


class OperationOutcomeIssue(_Open):
    severity: str
    code: str
    diagnostics: str
    expression: list[str]


class OperationOutcome(_Open):
    resourceType: str
    issue: list[OperationOutcomeIssue]
    detail: str
    request_id: str | None = None


def _errors(*codes: int) -> dict:
    """400/401/403/404 are OperationOutcomes (``CdsError``); 413 and 503 come from the service's shared layers
    (body limit, database / checker unavailable) with its usual error body."""
    texts = {400: "Malformed request: an OperationOutcome whose issue names the path", 401: "Missing, wrong, "
             "expired or replayed token", 403: "The API key's role may not call CDS services", 404: "No such service "
             "or card"}
    out: dict = {c: {"model": OperationOutcome, "description": texts[c]} for c in codes if c in texts}
    out.update(error_responses(*[c for c in codes if c not in texts]))
    return out


_HOOK_BODY = {
    "type": "object", "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string", "enum": ["order-select", "order-sign"]},
        "hookInstance": {"type": "string", "minLength": 1, "maxLength": 200},
        "fhirServer": {"type": "string", "maxLength": 2000},
        "fhirAuthorization": {"type": "object"},
        "context": {"type": "object", "required": ["userId", "patientId", "draftOrders"], "properties": {
            "userId": {"type": "string"}, "patientId": {"type": "string"}, "encounterId": {"type": "string"},
            "selections": {"type": "array", "items": {"type": "string"}},
            "draftOrders": {"type": "object", "description": "FHIR R4 Bundle of MedicationRequest (other order "
                                                             "types are ignored)"}}},
        "prefetch": {"type": "object", "additionalProperties": {
            "description": "FHIR R4 resource or Bundle (null when the client could not fetch it)"}},
    },
}
_FEEDBACK_BODY = {
    "type": "object", "required": ["feedback"],
    "properties": {"feedback": {"type": "array", "minItems": 1, "maxItems": cds_hooks.FEEDBACK_MAX_ENTRIES,
                                "items": {
        "type": "object", "required": ["card", "outcome", "outcomeTimestamp"],
        "properties": {
            "card": {"type": "string", "maxLength": 36},
            "outcome": {"type": "string", "enum": ["accepted", "overridden"]},
            "outcomeTimestamp": {"type": "string", "format": "date-time"},
            "acceptedSuggestions": {"type": "array", "items": {"type": "object", "required": ["id"],
                                                               "properties": {"id": {"type": "string"}}}},
            "overrideReason": {"type": "object", "properties": {
                "reason": {"type": "object", "properties": {"system": {"type": "string"},
                                                            "code": {"type": "string"},
                                                            "display": {"type": "string"}}},
                "userComment": {"type": "string", "maxLength": cds_hooks.COMMENT_MAX}}}}}}},
}


def _body(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.get("/cds-services", summary="CDS Hooks discovery", response_model=DiscoveryResponse,
            response_model_exclude_none=True,
            responses=_errors(401, 403, 413))
async def cds_discovery(caller: Caller):
    return cds_hooks.discovery()


@router.post("/cds-services/{service_id}", summary="Call a CDS service (order-select / order-sign)",
             response_model=CardsResponse, response_model_exclude_none=True,
             responses=_errors(400, 401, 403, 404, 413, 503),
             openapi_extra=_body(_HOOK_BODY))
async def cds_call(service_id: str, request: Request, caller: Caller, checker: CheckerDep, db: DbDep,
                   settings: SettingsDep):
    svc = cds_hooks.service(service_id)
    hook = cds_hooks.parse_hook_request(cds_hooks.parse_json(await request.body()), svc)
    evaluation = await run_in_threadpool(cds_hooks.evaluate, svc, hook, checker, settings)
    await db.run(cds_hooks.record_hook, db, svc=svc, request=hook, actor=caller.actor, evaluation=evaluation)
    # the cards are built to the specification (tests validate each against a JSON Schema written from it), so they
    # are sent as they are: re-validating ~20 cards through the response model cost more than the check itself
    return JSONResponse({"cards": [c.card for c in evaluation.cards]})


@router.post("/cds-services/{service_id}/feedback", summary="Feedback on cards (accepted / overridden)",
             response_model=FeedbackResponse, responses=_errors(400, 401, 403, 404, 413, 503),
             openapi_extra=_body(_FEEDBACK_BODY))
async def cds_feedback(service_id: str, request: Request, caller: Caller, db: DbDep):
    svc = cds_hooks.service(service_id)
    entries = cds_hooks.parse_feedback(cds_hooks.parse_json(await request.body()))
    return await db.run(cds_hooks.record_feedback, db, svc=svc, actor=caller.actor, entries=entries)
