"""``GET /healthz`` (liveness), ``GET /readyz`` (readiness), ``GET /metrics`` (Prometheus).

Readiness is extensible: ``ServiceState.readiness`` maps a component name to a callable returning
``(ok: bool, detail: str)`` or an awaitable of it (the database probe: it runs off the event loop and answers
within ``RXT_DB_PING_TIMEOUT_S``; in-memory probes are plain callables): ``triage_model``, ``red_flags``, ``database``, ``kb``, ``ddi_model``
(registered in ``serving.app.create_app``).  ``/readyz`` is 200 only when
every component is ok, else 503; the JSON lists every component either way.  The ``database`` component's detail
(URL, user, host, driver error) is shown only to a caller with an admin or ml key; anyone else reads ``ok`` or
``unavailable``.  ``worker`` names the process that answered (pid) and the model versions it serves: with several
worker processes each answers for itself.
"""

from __future__ import annotations

import inspect
import logging
import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serving.deps import MetricsDep, StateDep
from serving.logs import SERVICE_LOGGER
from serving.schemas import HealthResponse, ReadinessResponse, error_responses
from serving.security import authenticate, presented_key

router = APIRouter(tags=["health"])
PRIVATE_COMPONENTS = frozenset({"database"})  # details shown only to DETAIL_ROLES
DETAIL_ROLES = frozenset({"admin", "ml"})
log = logging.getLogger(SERVICE_LOGGER)


@router.get("/healthz", summary="Liveness: the process answers", response_model=HealthResponse,
            responses=error_responses(413))
async def healthz() -> dict:
    return {"status": "ok"}


async def _check(name: str, probe) -> tuple[bool, str]:
    try:
        result = probe()
        if inspect.isawaitable(result):  # a probe that does I/O runs off the event loop, with its own bound
            result = await result
        ok, detail = result
        return bool(ok), str(detail)
    except Exception as exc:  # noqa: BLE001 - a broken probe means "not ready", not a 500
        log.warning("readiness probe %s failed", name, exc_info=exc)
        return False, f"probe failed: {exc.__class__.__name__}: {exc}"


@router.get(
    "/readyz",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "At least one component is not ready."},
               **error_responses(413)},
    summary="Readiness: 200 only when every component (triage model, red-flag rules, ...) is ready",
)
async def readyz(state: StateDep, request: Request) -> JSONResponse:
    probes = dict(state.readiness)
    principal = authenticate(presented_key(request), state.api_keys)
    operator = principal is not None and principal.role in DETAIL_ROLES
    components = {}
    for name, probe in probes.items():
        ok, detail = await _check(name, probe)
        if name in PRIVATE_COMPONENTS and not operator:
            # the database's detail names its URL, user, host and the driver's error: operators only
            detail = "ok" if ok else "unavailable (an admin or ml API key sees why)"
        components[name] = {"ok": ok, "detail": detail}
    ready = bool(components) and all(c["ok"] for c in components.values())
    checker = state.checker.current
    worker = {"pid": os.getpid(), "triage_model_version": state.triage.holder.version,
              "ddi_model_version": None if checker is None else checker.model_version}
    return JSONResponse({"ready": ready, "components": components, "worker": worker},
                        status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}, **error_responses(413)})
async def metrics(registry: MetricsDep) -> Response:
    body, content_type = registry.render()
    return Response(body, media_type=content_type)
