"""Administration: ``POST /v1/admin/models/reload?model=triage|ddi`` (role admin).

Reloads a model from its configured URI (``RXT_TRIAGE_MODEL_URI``, default
``models:/triage-classifier@champion``; ``RXT_DDI_MODEL_URI``, default ``models:/ddi-severity@champion``), so it
picks up whatever version the alias points at now.  The swap is atomic: triage requests already in a
micro-batch, and prescription checks already running, finish on the old model.  A failed reload keeps serving
the old model: the answer is 200 with ``reloaded: false`` and ``error`` saying why (the request itself was fine).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Query

from serving.deps import Admin, StateDep
from serving.schemas import ErrorResponse, ReloadResponse, error_responses

router = APIRouter(tags=["admin"])


@router.post(
    "/v1/admin/models/reload",
    response_model=ReloadResponse,
    responses={
        **error_responses(413, 422),
        401: {"model": ErrorResponse, "description": "No API key, or an unknown one."},
        403: {"model": ErrorResponse, "description": "Only the admin role may reload models."},
    },
    summary="Swap in the current champion model (triage classifier or DDI risk model) without a restart",
)
async def reload_model(
    state: StateDep,
    _: Admin,
    model: Literal["triage", "ddi"] = Query("triage", description="`triage` (default) or `ddi`."),
) -> ReloadResponse:
    reload = state.triage.holder.reload if model == "triage" else state.checker.reload_ddi
    result = await asyncio.to_thread(reload)
    state.metrics.reloads.labels(model=model, outcome="ok" if result.reloaded else "failed").inc()
    return ReloadResponse(model=model, **result.as_dict())
