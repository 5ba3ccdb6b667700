"""``POST /v1/triage`` and ``POST /v1/triage/batch`` (roles: chat, admin)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from serving.deps import ChatUser, SettingsDep, TriageDep
from serving.errors import ServiceUnavailableError
from serving.schemas import (
    BATCH_MAX_ITEMS,
    DEFAULT_TOP_K,
    MAX_TOP_K,
    ErrorResponse,
    TriageBatchRequest,
    TriageBatchResponse,
    TriageRequest,
    TriageResponse,
    error_responses,
)
from serving.triage_service import TriageInput, TriageService
from triage.classifier import clean_text

router = APIRouter(tags=["triage"])

TopK = Annotated[
    int,
    Query(ge=1, le=MAX_TOP_K, description=f"How many centers to return (1-{MAX_TOP_K}); an emergency override counts as one."),
]

_ERRORS = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON."},
    401: {"model": ErrorResponse, "description": "No API key, or an unknown one."},
    403: {"model": ErrorResponse, "description": "The key's role may not call triage (needs chat or admin)."},
    422: {"model": ErrorResponse, "description": "A field is missing, of the wrong type, out of range or unknown; `errors` names each."},
    503: {"model": ErrorResponse, "description": "The model is not loaded yet, or the queue is full; retry after `Retry-After` seconds."},
    **error_responses(413),
}


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _ready(service: TriageService) -> TriageService:
    model_ok, model_detail = service.holder.is_ready()
    if not model_ok:
        raise ServiceUnavailableError(f"triage is not ready: {model_detail}")
    rules_ok, rules_detail = service.red_flags_ready()
    if not rules_ok:
        raise ServiceUnavailableError(f"triage is not ready: {rules_detail}")
    return service


def _check_texts(limit: int, items: list[tuple[str, TriageRequest]]) -> None:
    """The length first (O(1)); only a text within the limit gets the per-character blank check (the
    classifier's own normalisation: NFKC, control/format characters dropped, whitespace collapsed)."""
    errors = []
    for prefix, item in items:
        loc = ("body", *prefix.split("."), "text") if prefix else ("body", "text")
        if len(item.text) > limit:
            errors.append({"type": "string_too_long", "loc": loc,
                           "msg": f"text is {len(item.text)} characters; the limit is {limit}"})
        elif not clean_text(item.text):
            errors.append({"type": "value_error", "loc": loc,
                           "msg": "text must not be empty, whitespace or control characters only"})
    if errors:
        raise RequestValidationError(errors)


def _input(body: TriageRequest) -> TriageInput:
    return TriageInput(text=body.text, age=body.age, sex=body.sex, pregnant=body.pregnant, language=body.language)


@router.post(
    "/v1/triage",
    response_model=TriageResponse,
    responses=_ERRORS,
    summary="Triage one patient message",
    description=(
        "Ranked specialty centers with calibrated probabilities, an urgency level, the red flags that "
        "fired (with character offsets and cited source), and whether the model abstained. A fired "
        "emergency red flag sets `urgency` to `emergency` and puts the `emergency` center first with "
        "`probability: null`, whatever the model says."
    ),
)
async def triage(body: TriageRequest, request: Request, _: ChatUser, triage: TriageDep, settings: SettingsDep,
                     k: TopK = DEFAULT_TOP_K) -> Response:
    _check_texts(settings.max_text_chars, [("", body)])
    service = _ready(triage)
    item = _input(body)
    outcome = await service.batcher.submit(item)
    result = service.shape(item, outcome, k)
    result["request_id"] = request.state.request_id
    service.after_answer(result["request_id"], item, outcome, result, body.feedback_consent)
    return _JSON(result)


@router.post(
    "/v1/triage/batch",
    response_model=TriageBatchResponse,
    responses=_ERRORS,
    summary=f"Triage up to {BATCH_MAX_ITEMS} messages (offline re-triage)",
    description="Same answer as `/v1/triage` for each item, in request order. All items are validated first; "
    "one invalid item rejects the request (422 naming `items.<i>.<field>`).",
)
async def triage_batch(body: TriageBatchRequest, request: Request, _: ChatUser, triage: TriageDep,
                       settings: SettingsDep, k: TopK = DEFAULT_TOP_K) -> Response:
    _check_texts(settings.max_text_chars, [(f"items.{i}", item) for i, item in enumerate(body.items)])
    service = _ready(triage)
    inputs = [_input(item) for item in body.items]
    outcomes = await service.batcher.submit_many(inputs)
    results = [service.shape(item, outcome, k) for item, outcome in zip(inputs, outcomes)]
    return _JSON({"request_id": request.state.request_id, "results": results})
