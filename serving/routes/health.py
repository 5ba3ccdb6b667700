"""``GET /healthz`` (liveness), ``GET /readyz`` (readiness), ``GET /metrics`` (Prometheus).

Readiness is extensible: ``app.state.readiness`` maps a component name to a callable returning
``(ok: bool, detail: str)``.  Triage registers ``triage_model`` and ``red_flags``; other areas add
theirs (``kb``, ``ddi_model``, ``database``) in the app's lifespan.  ``/readyz`` is 200 only when
every component is ok, else 503; the JSON lists every component either way.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serving.logs import SERVICE_LOGGER
from serving.schemas_triage import ReadinessResponse

router = APIRouter(tags=["health"])
log = logging.getLogger(SERVICE_LOGGER)


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


def _check(name: str, probe) -> tuple[bool, str]:
    try:
        ok, detail = probe()
        return bool(ok), str(detail)
    except Exception as exc:  # noqa: BLE001 - a broken probe means "not ready", not a 500
        log.warning("readiness probe %s failed", name, exc_info=exc)
        return False, f"probe failed: {exc.__class__.__name__}: {exc}"


@router.get(
    "/readyz",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "At least one component is not ready."}},
    summary="Readiness: 200 only when every component (triage model, red-flag rules, ...) is ready",
)
async def readyz(request: Request) -> JSONResponse:
    probes = dict(getattr(request.app.state, "readiness", {}) or {})
    components = {}
    for name, probe in probes.items():
        ok, detail = _check(name, probe)
        components[name] = {"ok": ok, "detail": detail}
    ready = bool(components) and all(c["ok"] for c in components.values())
    return JSONResponse({"ready": ready, "components": components}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=Response)
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
