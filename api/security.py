"""API keys, the access check of every route, and the per-key rate limit (:mod:`api.ratelimit`).

``ROBUSTLAB_AUTH`` picks the mode:

* ``open`` (the embedded default, for a server on localhost): no key is asked for; ``robustlab up`` says so.
* ``keys``: requests carry ``Authorization: Bearer rlk_…``. Writing (submit, cancel, retry, upload) needs a key of
  scope ``write`` or ``admin``; reading (jobs, results, leaderboard, downloads) needs no key while
  ``ROBUSTLAB_PUBLIC_READ`` is true (the default), else any valid key. A missing or invalid key is ``401`` with
  ``WWW-Authenticate: Bearer``; a valid key of too small a scope is ``403``; too many requests ``429`` with
  ``Retry-After``.

Keys are made by ``robustlab keys create --name NAME --scope write`` (printed once). A key is
``rlk_<prefix>_<secret>`` with a 32-byte random secret: the database keeps its SHA-256 (a fast hash is enough for
keys this random) and the public ``prefix`` that finds the row, and the hashes are compared with
:func:`hmac.compare_digest`. Revoking a key (``robustlab keys revoke NAME``) takes effect on the next request::

    key, token = create_api_key(session, "ci", "write")     # token is shown once, never stored
    principal = authenticate(session, token)                # the ApiKey, or None
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import SettingsDep
from api.ratelimit import RateLimiter, retry_after
from core.config import Settings
from db.models import API_KEY_SCOPES, ApiKey, utcnow
from db.session import session_scope

KEY_PREFIX = "rlk_"
SCOPE_LEVEL = {"read": 1, "write": 2, "admin": 3}
LAST_USED_RESOLUTION = timedelta(seconds=60)  # last_used_at is written at most once a minute per key


# ---------------------------------------------------------------------------------------------------- keys
def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new key: ``(token, prefix)``; token = ``rlk_<prefix>_<secret>``, 8 hex characters of prefix and a
    43-character URL-safe encoding of 32 random bytes."""
    prefix = secrets.token_hex(4)
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def _split(token: str) -> str | None:
    """The prefix of a well-formed token, else ``None``."""
    if not token.startswith(KEY_PREFIX) or len(token) > 200:
        return None
    prefix, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    return prefix if sep and len(prefix) == 8 and secret else None


def create_api_key(session: Session, name: str, scope: str = "write") -> tuple[ApiKey, str]:
    """Store a new key; returns the row and the token (the only time the token exists in clear).

    Raises:
        ValueError: unknown scope, a bad name, or a key with this name already exists.
    """
    if scope not in API_KEY_SCOPES:
        raise ValueError(f"unknown scope {scope!r}: one of {', '.join(API_KEY_SCOPES)}")
    if not name or len(name) > 100 or not name.isprintable():
        raise ValueError("a key name is 1 to 100 printable characters")
    for _ in range(3):  # a prefix collision (1 in 4 billion) just draws again
        token, prefix = generate_key()
        key = ApiKey(name=name, prefix=prefix, key_hash=hash_key(token), scope=scope, created_at=utcnow())
        session.add(key)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
                raise ValueError(
                    f"an API key named {name!r} exists already (revoke it, or pick another name)"
                ) from None
            continue
        return key, token
    raise RuntimeError("could not draw a unique key prefix")


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all())


def revoke_api_key(session: Session, name: str) -> ApiKey | None:
    """Revoke the key called ``name`` (at once: the next request with it is ``401``). Returns ``None`` if there is
    no such key; revoking a revoked key keeps its first revocation time."""
    key = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None:
        return None
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.commit()
    return key


def authenticate(session: Session, token: str) -> ApiKey | None:
    """The live key ``token`` belongs to, or ``None`` (malformed, unknown, wrong secret or revoked)."""
    prefix = _split(token)
    if prefix is None:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    presented = hash_key(token)
    if key is None:
        hmac.compare_digest(presented, presented)  # the same work whether or not the prefix exists
        return None
    if not hmac.compare_digest(presented.encode(), key.key_hash.encode()) or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        stamp = update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now)
        session.execute(stamp.execution_options(synchronize_session=False))
        session.commit()
    return key


def _authenticate(database_url: str, token: str) -> ApiKey | None:
    with session_scope(database_url) as session:
        return authenticate(session, token)


# ---------------------------------------------------------------------------------------------------- access
@dataclass(frozen=True)
class Principal:
    """Who makes a request: an API key (``name``, ``scope``), or anonymous (``name`` ``""``, ``scope`` None) when
    auth is open or a public read."""

    name: str = ""
    scope: str | None = None

    @property
    def owner(self) -> str:
        """Namespace of what this client creates (idempotency keys, uploads)."""
        return self.name


bearer = HTTPBearer(auto_error=False, description="an API key from `robustlab keys create` (ROBUSTLAB_AUTH=keys)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="robustlab"' + (f', error="{error}"' if error else "")
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": challenge})


def _too_many(settings: Settings, wait: float) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"rate limit: {settings.rate_limit:g} requests/s (bursts of {settings.rate_limit_burst})",
        headers={"Retry-After": retry_after(wait)},
    )


def _rate_limit(request: Request, settings: Settings, client: str) -> None:
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.take(client)
    if wait > 0:
        raise _too_many(settings, wait)


def require(scope: str):
    """A dependency that admits requests allowed ``scope`` (``read``, ``write`` or ``admin``) and returns the
    :class:`Principal`."""
    needed = SCOPE_LEVEL[scope]

    # async: the open and public-read paths do no I/O, and a plain ``def`` would cost a thread-pool hop per request
    # and no session dependency: a request without a key needs no database (a key is checked in its own session)
    async def check(request: Request, settings: SettingsDep, credentials: Credentials) -> Principal:
        if settings.auth == "open":
            return Principal()
        if credentials is None:
            if scope == "read" and settings.public_read:
                _rate_limit(request, settings, f"ip:{request.client.host if request.client else '?'}")
                return Principal()
            raise _unauthorized(f"an API key with scope {scope!r} is required (Authorization: Bearer <key>)")
        limiter: RateLimiter = request.app.state.rate_limiter
        bad_key_client = f"bad-key:{request.client.host if request.client else '?'}"
        wait = limiter.exhausted(bad_key_client)  # too many invalid keys from here: 429 without a database query
        if wait > 0:
            raise _too_many(settings, wait)
        key = await run_in_threadpool(_authenticate, settings.database_url, credentials.credentials)
        if key is None:
            limiter.take(bad_key_client)
            raise _unauthorized("invalid or revoked API key", error="invalid_token")
        _rate_limit(request, settings, f"key:{key.name}")
        if SCOPE_LEVEL[key.scope] < needed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"API key {key.name!r} has scope {key.scope!r}; this needs {scope!r}",
                headers={"WWW-Authenticate": f'Bearer realm="robustlab", error="insufficient_scope", scope="{scope}"'},
            )
        return Principal(name=key.name, scope=key.scope)

    return check


ReadAccess = Annotated[Principal, Depends(require("read"))]
WriteAccess = Annotated[Principal, Depends(require("write"))]

__all__ = [
    "Principal",
    "RateLimiter",
    "ReadAccess",
    "WriteAccess",
    "authenticate",
    "create_api_key",
    "generate_key",
    "hash_key",
    "list_api_keys",
    "require",
    "revoke_api_key",
]
