"""``POST /v1/prescriptions/check``: run the prescription checker; queue what it flags.

A check whose verdict is review or block and whose worst finding is at least
``settings.queue_min_severity`` is stored as a pending review, with its audit entry, in one transaction;
the answer (with ``review_id``) is sent only after that commit.  Every other check is audited too, lightly
(verdict, rule ids, versions, the prescription's sha256; no patient data).  If the database cannot record
the check the answer is 503 and carries no verdict: a flagged prescription is never reported as passed,
and an unrecorded one is never reported at all.  An ``Idempotency-Key`` header makes a retry (after a timeout or a
503) safe: the first answer is stored with the key and returned again, the check is recorded once.

The handler is ``async``.  The database write runs on the database's own threads with its deadline
(``Database.run``), so a frozen database answers 503 within ``RXT_DB_SOCKET_TIMEOUT_S`` and never holds the event
loop.  With ``RXT_DB_GROUP_COMMIT`` (the default) the write goes through this process's single writer, which
records concurrent checks in one transaction (``serving.group_commit``); the answer still waits for its commit.

Hot path (issue #16; profiled in docs/benchmarks.md).  The route is a :class:`CheckRoute`: a request of the
ordinary shape -- a known key with an allowed role, ``Content-Type: application/json``, a body that is a valid
prescription, an Idempotency-Key (if any) within its length, a loaded checker -- is answered by
:func:`_fast_check`, which does the same work as FastAPI's handler of :func:`check_prescription` without its
per-request dependency solving (five dependencies, a header parameter, the body field); anything else (a missing
or wrong key, another content type, malformed JSON, an invalid prescription, no checker) is handed to FastAPI's
own handler, which answers it exactly as before (401/403/400/422/503 and their bodies).  The body is parsed the way
FastAPI parses it (``json.loads`` then ``Prescription.model_validate``), so the fast path accepts exactly what the
standard one accepts.  A check of at most :data:`INLINE_MAX_DRUGS` drugs (items plus current medications; a
rules-only check of such a prescription takes ~0.1-1 ms) runs on the event loop instead of a thread-pool hop;
a larger one (up to 50 items and 100 current medications, and with the DDI model up to ~11,000 pairs) still runs
in the thread pool, so it cannot hold the event loop.  The answer is serialised with pydantic-core's JSON
encoder (the same document as ``JSONResponse``'s ``json.dumps``, in a tenth of the time).  Dependency overrides
(``app.dependency_overrides``) reach the standard handler only: the fast path reads the app's state itself.

In the app built by ``serving.app.create_app`` this method and path do not even reach the route: :class:`CheckLane`
(the app's ``check_lane``) takes them in front of Starlette's/FastAPI's generic per-request stack, runs the same
fast path inside the app's own request-context and body-limit middleware, and hands anything else, with its body,
to the full stack, where :class:`CheckRoute` sends it straight to the standard handler.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.routing import APIRoute
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prescription_check import Checker
from prescription_check.schemas import Prescription
from serving import group_commit, review_queue
from serving.db.session import Database, DatabaseUnavailable
from serving.metrics import Metrics
from serving.middleware import HANDED_OVER
from serving.deps import CHECK_ROLES, CheckerDep, DbDep, MetricsDep, PrescriberOrPharmacist, SettingsDep
from serving.review_schemas import CheckResponse
from serving.schemas import error_responses
from serving.security import Principal, authenticate, presented_key
from serving.settings import Settings
from serving.state import get_state

INLINE_MAX_DRUGS = 12  # checks of at most this many drugs run on the event loop (see the module docstring)


CHECK_PATH = "/v1/prescriptions/check"
LANE_SCOPE_KEY = HANDED_OVER  # set in the scope of a request the lane handed to the app's full stack


class CheckRoute(APIRoute):
    """FastAPI's route with a fast path for requests of the ordinary shape (see the module docstring)."""

    def get_route_handler(self):
        standard = super().get_route_handler()

        async def handler(request: Request) -> Response:
            # a request handed over by the CheckLane was already tried on the fast path
            response = None if LANE_SCOPE_KEY in request.scope else await _fast_check(request)
            return response if response is not None else await standard(request)

        return handler


class CheckLane:
    """The ASGI front of ``POST /v1/prescriptions/check`` (issue #16): the app calls it *instead of* its whole
    Starlette/FastAPI stack for that method and path (``serving.app.RxtApp``).

    ``context`` is this app's own request-id / access-log / metrics / last-resort-500 middleware and body limit,
    wrapped around :meth:`endpoint`, so the answer carries the same ``X-Request-ID``, log line, metrics (under the
    route's template) and 413 as before.  What it skips, per request: Starlette's ServerErrorMiddleware, FastAPI's
    exception-telemetry check and body-limit layers, the /review headers layer (not this path), the
    ExceptionMiddleware, the AsyncExitStack, routing through the included routers and the request/response wrapper
    -- ~9% of the service's Python time per check in the profile (docs/benchmarks.md).  The endpoint runs
    :func:`_fast_check`; an error it raises is answered by the app's own exception handler for it (503 for an
    unreachable database, 422 for a bad Idempotency-Key ...) exactly as the ExceptionMiddleware would, and any
    other error ends in the context middleware's JSON 500.  A request that is not of the ordinary shape is handed,
    with its body, to the app's full stack (``full``), which answers it as it always did (401/403/400/422/503);
    the scope's :data:`LANE_SCOPE_KEY` tells the context middleware there not to count or log it twice."""

    def __init__(self, app, full, wrap) -> None:
        self.app = app
        self.full = full  # the app's whole stack: ``Starlette.__call__``
        self.route = next(r for r in router.routes if isinstance(r, CheckRoute) and r.path == CHECK_PATH)
        self.asgi = wrap(self.endpoint)  # context and body-limit middleware around the endpoint

    async def __call__(self, scope, receive, send) -> None:
        scope["app"] = self.app
        scope["route"] = self.route  # the metrics' and access log's route template, as routing would set it
        await self.asgi(scope, receive, send)

    async def endpoint(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        try:
            response = await _fast_check(request)
        except Exception as exc:  # noqa: BLE001 - answered by the app's handler for it, else re-raised (-> 500)
            handler = _handler_for(self.app, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        if response is not None:
            await response(scope, receive, send)
            return
        body = await request.body()  # read by _fast_check (or empty): handed on with the request
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        scope[LANE_SCOPE_KEY] = True
        await self.full(scope, replay, send)


def _handler_for(app, exc: Exception):
    """The app's exception handler for ``exc`` (by class, nearest first: as Starlette's ExceptionMiddleware
    looks it up), or None.  Every handler of this app is async (serving.errors)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers and cls is not Exception:
            return handlers[cls]
    return None


router = APIRouter(tags=["prescriptions"], route_class=CheckRoute)


class JSONBytesResponse(Response):
    """A JSON answer encoded by pydantic-core (compact, UTF-8: the document ``JSONResponse`` sends)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content)


@router.post(
    CHECK_PATH,
    summary="Check a prescription; flagged ones are queued for a pharmacist",
    response_model=CheckResponse,
    responses=error_responses(400, 401, 403, 413, 422, 503),
)
async def check_prescription(
    rx: Prescription, principal: PrescriberOrPharmacist, settings: SettingsDep, checker: CheckerDep, db: DbDep,
    metrics: MetricsDep, idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", max_length=review_queue.IDEMPOTENCY_KEY_MAX,
        description="Makes a retry safe: the same key with the same prescription returns the first answer "
        "(header `Idempotent-Replayed: true`) without recording the check twice; with another prescription 422.",
    )] = None,
):
    return await _check_and_record(rx, principal, settings, checker, db, metrics, idempotency_key)


async def _fast_check(request: Request) -> Response | None:
    """The answer for a request of the ordinary shape, or None to let FastAPI's handler answer it."""
    state = get_state(request)
    principal = authenticate(presented_key(request), state.api_keys)
    if principal is None or principal.role not in CHECK_ROLES:
        return None
    headers = request.headers
    content_type = headers.get("content-type")
    if content_type is None or content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    key = headers.get("idempotency-key")
    if key is not None and len(key) > review_queue.IDEMPOTENCY_KEY_MAX:
        return None
    checker = state.checker.current
    if checker is None:
        return None
    body = await request.body()  # cached on the request: the standard handler reads the same bytes
    if not body:
        return None
    try:
        rx = Prescription.model_validate(json.loads(body))
    except Exception:  # noqa: BLE001 - any problem with the body: the standard handler answers it (400 / 422)
        return None
    request.state.principal = principal
    return await _check_and_record(rx, principal, state.settings, checker, state.db, state.metrics, key)


async def _check(checker: Checker, rx: Prescription) -> dict:
    drugs = len(rx.items) + len(rx.patient.current_medications)
    if drugs <= INLINE_MAX_DRUGS:
        result = checker.check(rx)
    else:
        result = await run_in_threadpool(checker.check, rx)
    return result.model_dump(mode="json")


async def _check_and_record(rx: Prescription, principal: Principal, settings: Settings, checker: Checker,
                            db: Database, metrics: Metrics, idempotency_key: str | None) -> Response:
    key = review_queue.clean_idempotency_key(idempotency_key)
    result = await _check(checker, rx)
    actor = f"{principal.role}:{principal.key_id}"
    try:
        if settings.db_group_commit:
            job = review_queue.CheckJob(rx.model_dump(mode="json"), result, actor, settings.queue_min_severity)
            outcome = await group_commit.committer_for(
                db, settings.db_group_commit_max, metrics, settings.db_group_commit_wait_ms / 1000).submit(job, key)
        else:
            outcome = await db.run(
                review_queue.record_check_once, db, prescription=rx.model_dump(mode="json"), result=result,
                actor=actor, queue_min_severity=settings.queue_min_severity, idempotency_key=key,
            )
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(
            f"the check could not be recorded, so no result is given (do not dispense; retry): {exc}"
        ) from exc
    return JSONBytesResponse(outcome.body, headers={"Idempotent-Replayed": "true"} if outcome.replayed else None)
