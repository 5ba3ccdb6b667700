"""Administration: ``POST /v1/admin/models/reload`` (role admin).

Reloads the triage model from the configured URI (default ``models:/triage-classifier@champion``,
so it picks up whatever version the alias points at now).  The swap is atomic; requests already
in a micro-batch finish on the old model.  A failed reload keeps serving the old model: the answer
is 200 with ``reloaded: false`` and ``error`` saying why (the request itself was fine).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from serving.deps import Admin
from serving.schemas_triage import ErrorResponse, ReloadResponse

router = APIRouter(tags=["admin"])


@router.post(
    "/v1/admin/models/reload",
    response_model=ReloadResponse,
    responses={
        401: {"model": ErrorResponse, "description": "No API key, or an unknown one."},
        403: {"model": ErrorResponse, "description": "Only the admin role may reload models."},
    },
    summary="Swap in the current champion triage model without a restart",
)
async def reload_model(request: Request, _: Admin) -> ReloadResponse:
    service = request.app.state.triage
    result = await asyncio.to_thread(service.holder.reload)
    request.app.state.metrics.reloads.labels(outcome="ok" if result.reloaded else "failed").inc()
    return ReloadResponse(**result.as_dict())
