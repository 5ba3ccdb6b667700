"""Who may call the CDS Hooks endpoints: the EHR's signed JWT (as the CDS Hooks specification asks), or an API key.

A bearer token that looks like a JWT is verified as the specification's "Trusting CDS Clients" section says
(https://cds-hooks.hl7.org/, Security and Safety):

- ``iss`` must be an issuer of ``RXT_CDS_ISSUERS``; the signature is checked against that issuer's JWK Set only (a
  file, or an https URL that is fetched only because it is configured; a ``jku`` header must name that same URL:
  the service never fetches a key set the token points at by itself);
- ``alg`` must be one of ``RXT_CDS_JWT_ALGORITHMS`` (asymmetric only: ``none`` and HMAC are refused whatever the
  setting says), ``kid`` is required;
- ``aud`` must be the URL of the endpoint called (``<base>/cds-services``, ``<base>/cds-services/<id>``; for feedback
  also the service's URL), ``<base>`` = ``RXT_CDS_BASE_URL`` or the request's own base URL;
- ``exp``, ``iat`` and ``jti`` are required; a token living longer than ``RXT_CDS_JWT_MAX_LIFETIME_S`` is refused;
- ``(iss, jti)`` is stored in the review database until the token expires (``cds_jwt_ids``), so a token replayed
  to any replica sharing the database is refused.

Any other bearer token (or ``X-API-Key``) is an API key of the project (prescriber, pharmacist or admin).  A missing
or wrong token is a 401, a key of another role a 403 (both OperationOutcome bodies).  Library: PyJWT.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from fastapi import Request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from serving.cds_hooks import CdsError
from serving.db.models import CdsJwtId
from serving.db.session import Database
from serving.security import authenticate, presented_key
from serving.settings import Settings
from serving.state import get_state

API_KEY_ROLES = ("prescriber", "pharmacist", "admin")
_SYMMETRIC = ("none", "HS256", "HS384", "HS512")
_WWW = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class CdsCaller:
    actor: str            # "cds:<iss>" or "<role>:<key fingerprint>"
    kind: str             # "jwt" | "api_key"
    iss: str | None = None
    jti: str | None = None
    tenant: str | None = None


def _unauthorised(message: str) -> CdsError:
    return CdsError(401, "Authorization", message, code="security", headers=_WWW)


class KeySets:
    """The JWK Set of each trusted issuer: a file (re-read when it changes) or a URL (PyJWKClient, cached)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._files: dict[str, tuple[float, jwt.PyJWKSet]] = {}
        self._clients: dict[str, jwt.PyJWKClient] = {}
        self._lock = threading.Lock()

    def source(self, iss: str) -> str | None:
        return self.settings.cds_issuers.get(iss)

    def key(self, iss: str, kid: str):
        src = self.source(iss)
        if src is None:
            raise _unauthorised(f"issuer {iss[:200]!r} is not trusted (RXT_CDS_ISSUERS)")
        try:
            if src.startswith(("https://", "http://")):
                with self._lock:
                    client = self._clients.get(src)
                    if client is None:
                        client = self._clients[src] = jwt.PyJWKClient(
                            src, cache_jwk_set=True, lifespan=max(1, int(self.settings.cds_jwks_cache_s)), timeout=3)
                return client.get_signing_key(kid).key
            path = Path(src)
            mtime = path.stat().st_mtime
            with self._lock:
                cached = self._files.get(src)
                if cached is None or cached[0] != mtime:
                    cached = self._files[src] = (mtime, jwt.PyJWKSet.from_dict(json.loads(path.read_text())))
            for k in cached[1].keys:
                if k.key_id == kid:
                    return k.key
        except jwt.PyJWKClientError as exc:
            raise _unauthorised(f"no usable key {kid[:100]!r} for issuer {iss[:200]!r}: {exc}") from None
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise CdsError(503, "Authorization", f"the JWK Set of issuer {iss[:200]!r} cannot be read: "
                           f"{type(exc).__name__}", code="transient") from None
        raise _unauthorised(f"no key {kid[:100]!r} in the JWK Set of issuer {iss[:200]!r}")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def verify_jwt(token: str, *, settings: Settings, keys: KeySets, audiences: list[str],
               now: float | None = None) -> dict[str, Any]:
    """The verified claims, or :class:`CdsError` 401 saying what is wrong (never the token itself)."""
    if not settings.cds_issuers:
        raise _unauthorised("CDS client JWTs are not accepted here: no trusted issuer is configured "
                            "(RXT_CDS_ISSUERS); use an API key")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise _unauthorised(f"malformed JWT: {exc}") from None
    alg = header.get("alg")
    allowed = [a for a in settings.cds_jwt_algorithms if a not in _SYMMETRIC]
    if alg not in allowed:
        raise _unauthorised(f"JWT alg {str(alg)[:20]!r} is not accepted; accepted: {', '.join(allowed)}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _unauthorised("JWT header has no kid")
    if header.get("typ") not in (None, "JWT"):
        raise _unauthorised("JWT header typ must be 'JWT'")
    iss = unverified.get("iss")
    if not isinstance(iss, str) or not iss:
        raise _unauthorised("JWT has no iss")
    src = keys.source(iss)
    if src is None:
        raise _unauthorised(f"issuer {iss[:200]!r} is not trusted (RXT_CDS_ISSUERS)")
    jku = header.get("jku")
    if jku is not None and jku != src:
        raise _unauthorised("JWT jku is not the JWK Set URL configured for its issuer")
    key = keys.key(iss, kid)
    try:
        claims = jwt.decode(
            token, key, algorithms=[alg], audience=audiences, issuer=iss, leeway=settings.cds_jwt_leeway_s,
            options={"require": ["iss", "aud", "exp", "iat", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorised("JWT has expired") from None
    except jwt.InvalidAudienceError:
        raise _unauthorised(f"JWT aud is not this endpoint ({audiences[0]})") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _unauthorised(f"JWT lacks the {exc.claim} claim") from None
    except jwt.PyJWTError as exc:
        raise _unauthorised(f"JWT rejected: {type(exc).__name__}: {exc}") from None
    now = time.time() if now is None else now
    if not isinstance(claims.get("jti"), str) or not claims["jti"] or len(claims["jti"]) > 200:
        raise _unauthorised("JWT jti must be a string of 1-200 characters")
    life = settings.cds_jwt_max_lifetime_s + settings.cds_jwt_leeway_s
    if claims["exp"] - claims["iat"] > life or claims["exp"] - now > life:
        raise _unauthorised(f"JWT lives longer than {settings.cds_jwt_max_lifetime_s:g} s")
    return claims


_sweeps = {"n": 0}


def remember_jti(db: Database, iss: str, jti: str, exp: float, leeway: float) -> None:
    """Store ``(iss, jti)`` until the token expires; a second use is :class:`CdsError` 401 (replay)."""
    expires = datetime.fromtimestamp(exp, UTC) + timedelta(seconds=leeway)
    try:
        with db.session() as session:
            _sweeps["n"] += 1
            if _sweeps["n"] % 200 == 1:  # forget expired ids now and then (they cannot be replayed anyway)
                session.execute(delete(CdsJwtId).where(CdsJwtId.expires_at < datetime.now(UTC))
                                .execution_options(synchronize_session=False))
            session.add(CdsJwtId(iss=iss[:300], jti=jti, expires_at=expires))
            session.flush()
    except IntegrityError:
        raise _unauthorised("JWT was already used (jti replay)") from None


def audiences(request: Request, settings: Settings) -> list[str]:
    base = (settings.cds_base_url or str(request.base_url)).rstrip("/")
    path = request.url.path.rstrip("/")
    out = [base + path]
    if path.endswith("/feedback"):
        out.append(base + path.removesuffix("/feedback"))
    return out


async def cds_caller(request: Request) -> CdsCaller:
    """FastAPI dependency of every CDS Hooks endpoint."""
    state = get_state(request)
    settings = state.settings
    token = presented_key(request)
    if not token:
        raise _unauthorised("missing bearer token: send the EHR's signed JWT (or an API key) as "
                            "'Authorization: Bearer <token>'")
    if looks_like_jwt(token):
        keys = request.app.state.rxt_cds_keys if hasattr(request.app.state, "rxt_cds_keys") else None
        if keys is None:
            keys = request.app.state.rxt_cds_keys = KeySets(settings)
        # off the event loop: a configured JWK Set URL may be fetched (PyJWKClient, bounded by its timeout)
        claims = await run_in_threadpool(verify_jwt, token, settings=settings, keys=keys,
                                         audiences=audiences(request, settings))
        await state.db.run(remember_jti, state.db, claims["iss"], claims["jti"], float(claims["exp"]),
                           settings.cds_jwt_leeway_s)
        tenant = claims.get("tenant") if isinstance(claims.get("tenant"), str) else None
        return CdsCaller(f"cds:{claims['iss']}"[:300], "jwt", claims["iss"], claims["jti"], tenant)
    principal = authenticate(token, state.api_keys)
    if principal is None:
        raise _unauthorised("unknown API key and not a JWT")
    if principal.role not in API_KEY_ROLES:
        raise CdsError(403, "Authorization", f"role {principal.role!r} may not call CDS services; allowed: "
                       f"{', '.join(API_KEY_ROLES)}", code="forbidden")
    request.state.principal = principal
    return CdsCaller(f"{principal.role}:{principal.key_id}", "api_key")
