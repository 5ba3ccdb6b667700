"""Exception handlers: every error is JSON ``{"detail", "errors": [{"field", "message"}], "request_id"}``.

- request validation -> 422 with one entry per problem, the field named by its dotted path
  (``text``, ``age``, ``items.3.text``, ``k``); the offending input is never echoed (it may be
  patient text, or not even representable in JSON);
- a body that is not valid JSON -> 400 naming the problem and its position;
- HTTP errors (401/403/404/405/503 ...) keep their status and headers;
- the service is starting, reloading or overloaded -> 503 with ``Retry-After: 1``;
- the review database is unavailable, or no prescription checker is loaded -> 503 with ``Retry-After: 5``
  (a check that could not be recorded is never answered with a verdict);
- a CDS Hooks error (``serving.cds_hooks.CdsError``) -> its status with an OperationOutcome naming the path;
- a review-queue error (not found, conflict, invalid decision, reused idempotency key) -> its status, the field
  named;
- anything unexpected is left to ``serving.middleware.RequestContextMiddleware``: a JSON 500 quoting the request
  id, logged with a redacted traceback (no exception messages: they may quote prescription values).  No handler
  is registered for ``Exception`` here: Starlette re-raises after such a handler, and the server would then log
  the full messages.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.batching import BatcherClosedError, QueueFullError
from serving.cds_hooks import CdsError, operation_outcome
from serving.checker_service import CheckerUnavailable
from serving.db.session import DatabaseUnavailable
from serving.logs import SERVICE_LOGGER, current_request_id
from serving.review_queue import ReviewError

log = logging.getLogger(SERVICE_LOGGER)

_LOC_ROOTS = {"body", "query", "path", "header", "cookie"}


class ServiceUnavailableError(RuntimeError):
    """The service cannot answer right now (model not loaded yet); retry later."""


def field_name(loc: tuple | list) -> str:
    parts = list(loc)
    if parts and parts[0] in _LOC_ROOTS:
        root = parts.pop(0)
        if not parts:
            return root
    return ".".join(str(p) for p in parts) or "body"


def _message(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    loc = tuple(error.get("loc", ()))
    if loc == ("body",):
        if kind == "missing":
            return "a JSON object body is required"
        if kind in ("model_attributes_type", "dict_type", "model_type"):
            return "the body must be a JSON object (send Content-Type: application/json)"
    if kind == "extra_forbidden":
        return "unknown field; not part of this request's schema"
    msg = str(error.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg


def error_body(detail: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"detail": detail, "errors": errors or [], "request_id": current_request_id()}


def validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    """Turn pydantic/FastAPI error dicts into the service's 400/422 JSON."""
    for error in errors:
        if error.get("type") == "json_invalid":
            loc = list(error.get("loc", ()))
            position = loc[1] if len(loc) > 1 else None
            reason = (error.get("ctx") or {}).get("error") or "JSON decode error"
            where = f" at character {position}" if position is not None else ""
            message = f"malformed JSON{where}: {reason}"
            return JSONResponse(
                error_body(f"the request body is not valid JSON: {message}", [{"field": "body", "message": message}]),
                status_code=400,
            )
    items = [{"field": field_name(e.get("loc", ())), "message": _message(e)} for e in errors]
    fields = ", ".join(dict.fromkeys(i["field"] for i in items))
    return JSONResponse(error_body(f"invalid request: {fields}", items), status_code=422)


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_response(list(exc.errors()))


_PARSE_FAILED = "There was an error parsing the body"


async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    errors: list[dict[str, str]] = []
    if exc.status_code == 400 and detail == _PARSE_FAILED:
        # FastAPI's generic answer when the body cannot even be decoded (e.g. not UTF-8).
        cause = exc.__cause__ or exc.__context__
        why = "it is not UTF-8 text" if isinstance(cause, UnicodeDecodeError) else "it cannot be decoded"
        message = f"malformed JSON: {why}"
        detail = f"the request body is not valid JSON: {message}"
        errors = [{"field": "body", "message": message}]
    return JSONResponse(error_body(detail, errors), status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body(str(exc)), status_code=503, headers={"Retry-After": "1"})


async def _on_db_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body(str(exc)), status_code=503, headers={"Retry-After": "5"})


async def _on_review_error(request: Request, exc: ReviewError) -> JSONResponse:
    errors = [{"field": exc.field, "message": exc.detail}] if exc.field else []
    body = error_body(exc.detail, errors)
    body.update(exc.extra)
    return JSONResponse(body, status_code=exc.status_code)


async def _on_cds_error(request: Request, exc: CdsError) -> JSONResponse:
    """CDS Hooks: an OperationOutcome (as the specification suggests for non-2xx answers) plus the usual fields."""
    body = operation_outcome(exc.status, exc.path, exc.message, exc.code)
    body.update(error_body(exc.message, [{"field": exc.path, "message": exc.message}]))
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for kind in (QueueFullError, BatcherClosedError, ServiceUnavailableError):
        app.add_exception_handler(kind, _on_unavailable)
    for kind in (DatabaseUnavailable, CheckerUnavailable):
        app.add_exception_handler(kind, _on_db_unavailable)
    app.add_exception_handler(ReviewError, _on_review_error)
    app.add_exception_handler(CdsError, _on_cds_error)
