"""One pure-ASGI middleware for request ids, access logs and HTTP metrics (cheaper than
``BaseHTTPMiddleware`` on the hot path).

- The request id comes from ``X-Request-ID`` (if it is a plain token) or is generated; it is put
  in a context variable (so every log line and error body carries it) and echoed as the
  ``X-Request-ID`` response header.
- One access log line per request: method, route template, status, duration, the caller's key
  fingerprint (never the key).  No query strings or bodies.
- ``rxt_http_requests_total`` / ``rxt_http_request_duration_seconds`` by route *template*
  (``/v1/triage``), so unknown paths cannot blow up label cardinality (they count as ``unmatched``).
- The one place unexpected errors end: an exception escaping the app becomes a JSON 500 with the request id
  (when no response has started), logged with its traceback *without the exception messages*
  (``serving.logs.redacted_exception``: a database error quotes the failing row).  It is not re-raised, so the
  server does not log it again in full.

``BodyLimitMiddleware`` refuses a body over ``RXT_MAX_REQUEST_BYTES`` with 413 before anything parses it or
authenticates the caller.
"""

from __future__ import annotations

import json
import logging
import time

from serving.logs import ACCESS_LOGGER, SERVICE_LOGGER, new_request_id, redacted_exception, request_id_var
from serving.security import REVIEW_PAGE_HEADERS

access_log = logging.getLogger(ACCESS_LOGGER)
service_log = logging.getLogger(SERVICE_LOGGER)


# in the scope of a request that ``serving.routes.prescriptions.CheckLane`` (with its own RequestContextMiddleware:
# request id, access log, metrics) handed to the app's full stack: the stack's RequestContextMiddleware then only
# keeps its last-resort JSON 500, so the request is counted, logged and given an id once
HANDED_OVER = "rxt.check_lane"


async def _send_500(exc: Exception, scope, rid: str, started: bool, send) -> None:
    """Log ``exc`` without its messages (they may quote prescription or patient values) and, when no response
    has started, answer a JSON 500 quoting the request id."""
    service_log.error("unhandled error on %s %s (%s)", scope.get("method"), scope.get("path"),
                      exc.__class__.__name__, extra={"fields": {"exc": redacted_exception(exc)},
                                                     "request_id": rid})
    if started:
        return
    body = json.dumps(
        {
            "detail": f"internal error ({exc.__class__.__name__}); quote request_id {rid} to the operators",
            "errors": [],
            "request_id": rid,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    def __init__(self, app, metrics, activity=None) -> None:
        self.app = app
        self.metrics = metrics
        # requests in flight, for the shadow scorer process (serving.shadow_worker.ActivityBoard), or None
        self.activity = activity
        # the labelled children, looked up once per (route template, method[, status]): ``labels()`` validates,
        # locks and builds a key on every call (these dicts hold one entry per label set the metrics hold anyway)
        self._counters: dict[tuple[str, str, int], object] = {}
        self._histograms: dict[tuple[str, str], object] = {}

    def _counter(self, route: str, method: str, status: int):
        child = self._counters.get((route, method, status))
        if child is None:
            child = self._counters[(route, method, status)] = self.metrics.requests.labels(
                route=route, method=method, status=str(status))
        return child

    def _histogram(self, route: str, method: str):
        child = self._histograms.get((route, method))
        if child is None:
            child = self._histograms[(route, method)] = self.metrics.latency.labels(route=route, method=method)
        return child

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if HANDED_OVER in scope:
            await self._last_resort_only(scope, receive, send)
            return
        presented = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                presented = value.decode("latin-1")
                break
        rid = new_request_id(presented)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = {"code": 500, "started": False}
        rid_header = (b"x-request-id", rid.encode("latin-1"))

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        activity = self.activity
        if activity is not None:
            activity.enter()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # noqa: BLE001 - the last resort: a JSON 500, never a bare reset
            await _send_500(exc, scope, rid, status["started"], send_wrapper)
        finally:
            if activity is not None:
                activity.leave()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            code = status["code"]
            self._counter(template, method, code).inc()
            self._histogram(template, method).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state") or {}
                principal = state.get("principal")
                fields = {
                    "method": method,
                    "route": template,
                    "status": code,
                    "duration_ms": round(elapsed * 1000, 2),
                }
                if principal is not None:
                    fields["key_id"] = principal.key_id
                    fields["role"] = principal.role
                access_log.info("request", extra={"fields": fields, "request_id": rid})
            request_id_var.reset(token)


    async def _last_resort_only(self, scope, receive, send) -> None:
        """A request handed over by the check lane: id, log and metrics are the lane's; the JSON 500 stays here
        (inside Starlette's ServerErrorMiddleware, which would answer a plain-text 500 first)."""
        watched = _WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # noqa: BLE001 - the last resort, as in __call__
            await _send_500(exc, scope, request_id_var.get() or "-", watched.started, watched)


class _WatchedSend:
    """An ASGI ``send`` that remembers whether the response has started (a JSON 500 or a 413 can only be answered
    before it has)."""

    __slots__ = ("send", "started")

    def __init__(self, send) -> None:
        self.send, self.started = send, False

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class _BodyTooLarge(BaseException):
    """Raised from ``receive`` when a streamed body passes the limit.  A BaseException on purpose: FastAPI turns
    any Exception met while reading a body into a 400, and this must reach ``BodyLimitMiddleware``."""


class BodyLimitMiddleware:
    """Refuse a request body larger than ``max_bytes`` with 413, before the app parses it or authenticates the
    caller: at once when ``Content-Length`` says so, else as soon as the streamed body passes the limit."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send) -> None:
        limit = self.max_bytes
        body = json.dumps({
            "detail": f"the request body is larger than the limit of {limit} bytes",
            "errors": [{"field": "body", "message": f"at most {limit} bytes (RXT_MAX_REQUEST_BYTES)"}],
            "request_id": request_id_var.get(),
        }).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(send)
                    return
                break
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        watched = _WatchedSend(send)
        try:
            await self.app(scope, limited_receive, watched)
        except _BodyTooLarge:
            if watched.started:
                raise RuntimeError("request body over the limit after the response started") from None
            await self._refuse(send)


class SecurityHeadersMiddleware:
    """The /review page's security headers (CSP, frame denial, no-store ...) on *every* response under
    ``/review``: pages, redirects, and errors from any layer (422 from form validation, 404, 405, 413, 500).
    A header the response already has is kept (the static files' ``Cache-Control``)."""

    def __init__(self, app, prefix: str = "/review", headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.prefix = prefix
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (headers or REVIEW_PAGE_HEADERS).items()]

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(k, v) for k, v in self.headers if k not in present]]
            await send(message)

        await self.app(scope, receive, with_headers)
