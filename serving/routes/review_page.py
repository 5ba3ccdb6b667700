"""``/review``: the pharmacists' web page (server-rendered Jinja2, a little JavaScript, no build step).

- Sign-in with a pharmacist API key (admins may sign in read-only).  The key is checked once and never
  stored: the session cookie (signed with itsdangerous, 8 h, HttpOnly, SameSite=Strict, path /review)
  holds the key's fingerprint and role and a random session id, and is rejected as soon as that key is no
  longer configured or the session was signed out (the id is revoked in ``revoked_sessions``).
- Every form carries a CSRF token bound to the session (the sign-in form a short-lived signed token).
- The decision form carries a fresh idempotency key, so a double submit records one decision, and the
  review's version, so a decision made on a stale page gets "someone else decided first".

The cookie-signing secret: ``RXT_SESSION_SECRET`` if set (use it when several processes serve the page),
else a random secret generated once and kept in ``<work_dir>/session_secret`` (mode 0600).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete

from prescription_check.schemas import SEVERITIES
from serving import review_queue
from serving.db.models import RevokedSession
from serving.db.session import DatabaseUnavailable
from serving.logs import SERVICE_LOGGER
from serving.security import REVIEW_PAGE_HEADERS as SECURITY_HEADERS
from serving.security import _fingerprint, authenticate, session_secret
from serving.state import get_state

router = APIRouter(tags=["review page"], include_in_schema=False)
log = logging.getLogger(SERVICE_LOGGER)

SERVING_DIR = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(SERVING_DIR / "templates"))
_URL = re.compile(r"https?://[^\s;,<>\"')]+")


def source_parts(source: str | None) -> list[tuple[str, bool]]:
    """Split a source citation into text and http(s) links (only those become <a href>)."""
    parts: list[tuple[str, bool]] = []
    text, last = source or "", 0
    for m in _URL.finditer(text):
        if m.start() > last:
            parts.append((text[last:m.start()], False))
        parts.append((m.group(0), True))
        last = m.end()
    if last < len(text):
        parts.append((text[last:], False))
    return parts


templates.env.filters["source_parts"] = source_parts
STATIC_DIR = SERVING_DIR / "static"
STATIC_FILES = {"review.css": "text/css", "review.js": "text/javascript"}

MAX_REVIEW_ID = 2**31 - 1  # review ids are 32-bit integers in both databases
COOKIE = "rxt_review_session"
SESSION_MAX_AGE = 8 * 3600
LOGIN_TOKEN_MAX_AGE = 3600
PAGE_ROLES = ("pharmacist", "admin")
STATUS_TABS = (("pending", "Pending"), ("approved", "Approved"), ("rejected", "Rejected"),
               ("changes_requested", "Changes requested"), ("all", "All"))


def _serializer(request: Request, salt: str) -> URLSafeTimedSerializer:
    state = get_state(request)
    if state.session_secret is None:  # app used without its lifespan: derive once and keep
        state.session_secret = session_secret(state.settings)
    return URLSafeTimedSerializer(state.session_secret, salt=salt)


async def current_user(request: Request) -> dict[str, Any] | None:
    """The signed-in user, or None: the cookie must be signed, younger than 8 h, name a key that is still
    configured with the same role, and carry a session id that was not signed out (``revoked_sessions``, checked
    in this process's memory first, then in the database shared by every process serving the page)."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(request, "review-session").loads(raw, max_age=SESSION_MAX_AGE)
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
        return None
    # the key must still be configured, with the same role
    live = {_fingerprint(k): role for k, role in get_state(request).api_keys.items()}
    if live.get(data.get("kid")) != data.get("role") or data.get("role") not in PAGE_ROLES:
        return None
    sid = data["sid"]
    if sid in _REVOKED:
        return None
    db = get_state(request).db

    def revoked() -> bool:
        with db.session() as session:
            return session.get(RevokedSession, sid) is not None

    if await db.run(revoked):  # DatabaseUnavailable -> the page's 503 (it cannot work without the database)
        _REVOKED[sid] = time.time() + SESSION_MAX_AGE
        return None
    return data


# session ids signed out, known to this process: sid -> when its cookie would have expired anyway
_REVOKED: dict[str, float] = {}


def _revoke(db, sid: str) -> None:
    now = time.time()
    for old in [k for k, until in _REVOKED.items() if until < now]:
        _REVOKED.pop(old, None)
    _REVOKED[sid] = now + SESSION_MAX_AGE
    with db.session() as session:
        moment = datetime.now(UTC)
        session.execute(delete(RevokedSession).where(RevokedSession.expires_at < moment))
        if session.get(RevokedSession, sid) is None:
            session.add(RevokedSession(sid=sid, revoked_at=moment,
                                       expires_at=moment + timedelta(seconds=SESSION_MAX_AGE)))


def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, {"severities": SEVERITIES, **context},
                                          status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _login_page(request: Request, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    token = _serializer(request, "review-login").dumps("login")
    return _render(request, "review_login.html", {"csrf": token, "error": error, "user": None},
                   status_code=status_code)


def _csrf_ok(user: dict[str, Any], presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(str(user.get("csrf", "")), str(presented))


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


@router.get("/review/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})


@router.get("/review", response_class=HTMLResponse)
async def queue_page(request: Request, status: str = "pending", severity: str | None = None, done: int | None = None,
               page: int = 1):
    try:
        user = await current_user(request)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": None, "error": str(exc)}, status_code=503)
    if user is None:
        return _login_page(request)
    if status not in dict(STATUS_TABS):
        status = "pending"
    if severity not in SEVERITIES:
        severity = None
    page = max(1, min(page, 100_000))
    per_page = 25
    db = get_state(request).db

    def read():
        with db.session() as session:
            result = review_queue.list_reviews(session, status=status, severities=[severity] if severity else None,
                                               limit=per_page, offset=(page - 1) * per_page)
            items = [review_queue.review_summary(r) for r in result.items]
            for item, row in zip(items, result.items, strict=True):
                item["headline"] = (row.findings or [{}])[0].get("message", "")
            counts = {s: review_queue.list_reviews(session, status="pending", severities=[s], limit=1).total
                      for s in SEVERITIES}
            return result, items, counts

    try:
        result, items, counts = await db.run(read)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": user, "error": str(exc)}, status_code=503)
    return _render(request, "review_list.html", {
        "user": user, "items": items, "total": result.total, "status": status, "severity": severity,
        "tabs": STATUS_TABS, "done": done, "page": page, "pages": max(1, -(-result.total // per_page)),
        "pending_counts": counts,
    })


@router.post("/review/login")
async def login(request: Request, api_key: str = Form("", max_length=500), csrf: str = Form("", max_length=500)):
    try:
        _serializer(request, "review-login").loads(csrf, max_age=LOGIN_TOKEN_MAX_AGE)
    except (BadSignature, SignatureExpired):
        return _login_page(request, "The sign-in form expired; please try again.", status_code=400)
    principal = authenticate(api_key.strip(), get_state(request).api_keys)
    if principal is None:
        return _login_page(request, "Unknown key.", status_code=401)
    if principal.role not in PAGE_ROLES:
        return _login_page(request, f"A {principal.role} key cannot open the review queue; "
                           "sign in with a pharmacist key.", status_code=403)
    session = {"kid": principal.key_id, "role": principal.role, "csrf": secrets.token_urlsafe(24),
               "sid": secrets.token_urlsafe(18)}  # the session's id: a sign-out revokes it on the server
    response = _redirect("/review")
    response.set_cookie(COOKIE, _serializer(request, "review-session").dumps(session), max_age=SESSION_MAX_AGE,
                        httponly=True, samesite="strict", path="/review",
                        secure=request.url.scheme == "https")
    return response


@router.post("/review/logout")
async def logout(request: Request, csrf: str = Form("", max_length=500)):
    """Sign out: the session id is revoked on the server (a copy of the cookie no longer works), then the
    cookie is deleted."""
    try:
        user = await current_user(request)
    except DatabaseUnavailable:
        user = None
    response = _redirect("/review")
    if user is not None and _csrf_ok(user, csrf):
        db = get_state(request).db
        try:
            await db.run(_revoke, db, user["sid"])
        except DatabaseUnavailable as exc:  # revoked in this process at least; say so
            log.warning("sign-out recorded in this process only: %s", exc)
        response.delete_cookie(COOKIE, path="/review")
    return response


async def _detail_context(request: Request, user: dict, review_id: int) -> dict[str, Any]:
    db = get_state(request).db

    def read():
        with db.session() as session:
            return review_queue.review_detail(session, review_queue.get_review(session, review_id))

    detail = await db.run(read)
    return {
        "user": user, "r": detail, "can_decide": user["role"] == "pharmacist" and detail["status"] == "pending",
        "reason_codes": list(review_queue.REASON_CODES.values()), "idempotency_key": uuid.uuid4().hex,
    }


@router.get("/review/{review_id}", response_class=HTMLResponse)
async def detail_page(request: Request, review_id: int):
    try:
        user = await current_user(request)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": None, "error": str(exc)}, status_code=503)
    if user is None:
        return _redirect("/review")
    if not 1 <= review_id <= MAX_REVIEW_ID:  # no such row can exist; do not hand the number to the database
        return _not_found(request, user, review_id)
    try:
        context = await _detail_context(request, user, review_id)
    except review_queue.NotFound as exc:
        return _render(request, "review_error.html", {"user": user, "error": exc.detail}, status_code=404)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": user, "error": str(exc)}, status_code=503)
    return _render(request, "review_detail.html", context)


@router.post("/review/{review_id}/decision")
async def decide_form(
    request: Request,
    review_id: int,
    decision: str = Form(..., max_length=40),
    reason_code: str = Form("", max_length=64),
    note: str = Form("", max_length=review_queue.NOTE_MAX_CHARS),
    csrf: str = Form("", max_length=500),
    idempotency_key: str = Form("", max_length=review_queue.IDEMPOTENCY_KEY_MAX),
    expected_version: int | None = Form(None),
):
    try:
        user = await current_user(request)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": None, "error": str(exc)}, status_code=503)
    if user is None:
        return _redirect("/review")
    if not 1 <= review_id <= MAX_REVIEW_ID:
        return _not_found(request, user, review_id)
    if not _csrf_ok(user, csrf):
        return _render(request, "review_error.html",
                       {"user": user, "error": "The form's security token did not match; reload the page."},
                       status_code=403)
    if user["role"] != "pharmacist":
        return _render(request, "review_error.html", {"user": user, "error": "Only pharmacists decide."},
                       status_code=403)
    for name, value in (("decision", decision), ("reason_code", reason_code), ("note", note),
                        ("idempotency_key", idempotency_key)):
        if "\x00" in value:  # no database text column can hold it
            return await _form_error(request, user, review_id, f"{name} must not contain NUL characters", 422,
                                     {"decision": decision, "reason_code": reason_code, "note": ""})
    db = get_state(request).db
    try:
        await db.run(review_queue.decide, db, review_id, decision=decision, actor=f"pharmacist:{user['kid']}",
                       reason_code=reason_code or None, note=note or None, expected_version=expected_version,
                       idempotency_key=idempotency_key or None)
    except DatabaseUnavailable as exc:
        return _render(request, "review_error.html", {"user": user, "error": str(exc)}, status_code=503)
    except review_queue.ReviewError as exc:
        return await _form_error(request, user, review_id, exc.detail, exc.status_code,
                                 {"decision": decision, "reason_code": reason_code, "note": note})
    return _redirect(f"/review?done={review_id}")


async def _form_error(request: Request, user: dict, review_id: int, error: str, status_code: int,
                      form: dict[str, str]) -> HTMLResponse:
    """The detail page again with the form as it was sent and the error (or the error page alone)."""
    try:
        context = await _detail_context(request, user, review_id)
    except (review_queue.ReviewError, DatabaseUnavailable):
        return _render(request, "review_error.html", {"user": user, "error": error}, status_code=status_code)
    context.update(error=error, form=form)
    return _render(request, "review_detail.html", context, status_code=status_code)


def _not_found(request: Request, user: dict, review_id: int) -> HTMLResponse:
    return _render(request, "review_error.html", {"user": user, "error": f"review {review_id} does not exist"},
                   status_code=404)
