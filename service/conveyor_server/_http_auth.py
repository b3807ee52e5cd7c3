"""Who an HTTP/JSON API request comes from: a bearer token or a session cookie.

API clients send `Authorization: Bearer TOKEN`, with the tokens and tenants
gRPC accepts. A browser logs in once (`POST /v1/session` with a token) and
gets a session cookie: HttpOnly, so page scripts cannot read it, and
SameSite=Strict, so other sites' pages do not send it. The cookie holds an
expiry and the SHA-256 digest of the token, signed with a key derived from
the store's signing key: replicas on a shared store accept each other's
sessions, and a session ends as soon as its token leaves the token file.

Writes authenticated by the cookie also need the `X-CSRF-Token` header,
whose value the login returns (and `GET /v1/session` repeats): a token
bound to the session by the same key, which a page on another origin can
neither read nor forge (double-submit). Bearer requests need none, since a
browser never adds that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

import grpc

from conveyor_server._auth import MALFORMED, TokenTable, token_digest
from conveyor_server._errors import ServiceError

SESSION_COOKIE = "conveyor_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

MISSING = (
    "this server requires a bearer token: send the header 'Authorization: Bearer <token>', "
    "or log in with POST /v1/session"
)
UNKNOWN = (
    "the bearer token is not valid on this server: send 'Authorization: Bearer <token>' "
    "with a token the server was given"
)
EXPIRED = "the session is not valid (expired, logged out or its token revoked): log in again"
CSRF = (
    f"a write authenticated by the session cookie needs the {CSRF_HEADER} header with "
    "the csrf_token that POST /v1/session (or GET /v1/session) returned"
)


def _same(presented: str, expected: str) -> bool:
    # As bytes: compare_digest refuses str with characters beyond ASCII.
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())


def _unauthenticated(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, message)


class Session:
    """A logged-in browser: its tenant, cookie, CSRF token and expiry."""

    __slots__ = ("cookie", "csrf_token", "expire_time", "tenant")

    def __init__(self, tenant: str, cookie: str, csrf_token: str, expire_time: float) -> None:
        self.tenant = tenant
        self.cookie = cookie
        self.csrf_token = csrf_token
        self.expire_time = expire_time


class HttpAuth:
    """Authenticates HTTP requests; with `tokens` None everything is open."""

    def __init__(
        self,
        tokens: TokenTable | None,
        signing_key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = tokens
        # Its own key: a session MAC can never pass for a page token's.
        self._key = hmac.new(signing_key, b"conveyor http session", hashlib.sha256).digest()
        self._clock = clock

    def _mac(self, label: str, value: str) -> str:
        return hmac.new(self._key, f"{label}:{value}".encode(), hashlib.sha256).hexdigest()

    def _session(self, tenant: str, cookie: str, expire_time: float) -> Session:
        return Session(tenant, cookie, self._mac("csrf", cookie), expire_time)

    def login(self, token: str) -> Session:
        """A new session for `token`; UNAUTHENTICATED for an unknown one."""
        if self.tokens is None:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "authentication is off on this server: every route is open, no login needed",
            )
        digest = token_digest(token)
        tenant = self.tokens.tenant_of_digest(digest)
        if tenant is None:
            raise _unauthenticated(UNKNOWN)
        expire_time = int(self._clock()) + SESSION_SECONDS
        body = f"{expire_time}.{digest.hex()}"
        return self._session(tenant, f"{body}.{self._mac('session', body)}", expire_time)

    def session(self, cookie: str) -> Session | None:
        """The session of a cookie, or None when it is forged, expired or
        its token is no longer accepted."""
        if self.tokens is None:
            return None
        body, _, mac = cookie.rpartition(".")
        if not _same(self._mac("session", body), mac):
            return None
        expiry, _, digest = body.partition(".")
        try:
            expire_time = int(expiry)
            presented = bytes.fromhex(digest)
        except ValueError:
            return None
        if expire_time <= self._clock():
            return None
        tenant = self.tokens.tenant_of_digest(presented)
        if tenant is None:
            return None
        return self._session(tenant, cookie, expire_time)

    def tenant(self, method: str, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str:
        """The tenant a request acts as; "" when authentication is off."""
        if self.tokens is None:
            return ""
        header = headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise _unauthenticated(MALFORMED.replace("metadata", "header"))
            tenant = self.tokens.tenant_of(token)
            if tenant is None:
                raise _unauthenticated(UNKNOWN)
            return tenant
        cookie = cookies.get(SESSION_COOKIE)
        if cookie is None:
            raise _unauthenticated(MISSING)
        session = self.session(cookie)
        if session is None:
            raise _unauthenticated(EXPIRED)
        if method not in SAFE_METHODS and not _same(
            headers.get(CSRF_HEADER, ""), session.csrf_token
        ):
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, CSRF)
        return session.tenant
