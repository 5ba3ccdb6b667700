"""Structured JSON logs with a request id.

Every log record is one JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the
current ``request_id`` (when inside a request) and any ``extra={"fields": {...}}`` given by the
caller.  The request id is taken from the ``X-Request-ID`` header when it is a sane token, else
generated; it is echoed in the response header and in triage responses.

Patient text is never logged unless ``settings.log_patient_text`` is true, and API keys never
are: callers log only the key's fingerprint (``Principal.key_id``).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import sys
import time
import traceback
import uuid

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("rxt_request_id", default=None)

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

ACCESS_LOGGER = "rxtriage.access"
SERVICE_LOGGER = "rxtriage.serving"


# generated ids: a random per-process prefix + a counter.  Unique across processes and restarts, 32 hex
# characters like a uuid4, and free of the os.urandom call per request (5% of the event loop under load)
_ID_PREFIX = uuid.uuid4().hex[:20]
_ID_COUNTER = itertools.count()


def _reseed_request_ids() -> None:
    """A forked worker (several service processes) draws its own prefix: request ids stay unique across workers,
    which outcome feedback relies on (serving.feedback matches outcomes by request id)."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = uuid.uuid4().hex[:20]
    _ID_COUNTER = itertools.count()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_request_ids)


def new_request_id(presented: str | None) -> str:
    """Use the caller's X-Request-ID when it is a plain token (no spaces, <=128 chars)."""
    if presented and _REQUEST_ID_OK.match(presented):
        return presented
    return f"{_ID_PREFIX}{next(_ID_COUNTER) % (1 << 48):012x}"


def current_request_id() -> str | None:
    return request_id_var.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line.  Structured fields go in ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


_HANDLER_MARK = "_rxt_json_handler"


def configure_logging(level: str | int = "INFO", stream=None) -> None:
    """Install the JSON formatter on the root logger once (idempotent).

    Used by ``python -m serving``; tests capture records with pytest's ``caplog`` instead.
    uvicorn's own access log is silenced: the app writes its own access line with the request id.
    """
    root = logging.getLogger()
    if not any(getattr(h, _HANDLER_MARK, False) for h in root.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def log_extra(fields: dict) -> dict:
    """``extra=`` for a structured record; the request id is bound now, not when formatted."""
    return {"fields": fields, "request_id": request_id_var.get()}


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra=log_extra(fields))


def redacted_exception(exc: BaseException) -> str:
    """The traceback of ``exc`` and of its causes: frames and exception types, without the messages.

    Messages can quote data: a database error quotes the failing row (PostgreSQL's ``DETAIL: Failing row
    contains (...)``), a validation error the input value.  Unexpected errors are logged with this, so no
    prescription or patient value reaches the logs; the frames still say where it happened.
    """
    parts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        orig = getattr(exc, "orig", None)
        code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
        if code:
            kind += f" [{code}]"
        parts.append("".join(traceback.format_tb(exc.__traceback__)) + kind + " (message withheld: may quote data)")
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "\n-- caused by --\n".join(parts)
