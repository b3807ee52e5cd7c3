"""Bearer-token authentication, and the tenant each token belongs to.

Tokens come from a file (`--auth-tokens-file`) or the environment
(`CONVEYOR_AUTH_TOKENS`). Only their SHA-256 digests are kept, and a
presented token is compared against every digest with
`hmac.compare_digest`, so neither the table nor the time a check takes
tells anything about a token.

The interceptor checks `authorization: Bearer <token>` on every RPC except
the health and reflection services, and hands the token's tenant to the
servicer through a context variable: grpc.aio runs the interceptor and the
handler of each RPC in one asyncio task of their own, so a value set there
is seen by that RPC alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc
from grpc import aio

from conveyor_server._config import TENANT_NAME, ServerConfig
from conveyor_server._observer import NULL_OBSERVER, TaskObserver

logger = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"
MIN_TOKEN_LENGTH = 16
# Tenants end up in logs and page-token digests: keep them plain.
_DIGEST = re.compile(r"[0-9a-f]{64}")
# What an HTTP/2 header value may carry, without spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")

# Methods anyone may call: load balancers probe health without a token, and
# reflection describes a contract that is public anyway.
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_tenant: ContextVar[str] = ContextVar("conveyor_tenant", default="")

MISSING = "this server requires a bearer token: send the metadata 'authorization: Bearer <token>'"
MALFORMED = "the authorization metadata must read 'Bearer <token>'"
UNKNOWN = (
    "the bearer token is not valid on this server: send 'authorization: Bearer <token>' "
    "with a token the server was given"
)


def current_tenant() -> str:
    """The tenant of the RPC being served; "" when authentication is off."""
    return _tenant.get()


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Digests of the accepted tokens and the tenant of each."""

    def __init__(self, entries: Iterable[tuple[bytes, str]]) -> None:
        self._entries = tuple(entries)
        if not self._entries:
            raise ValueError("no tokens given")

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(tenant for _, tenant in self._entries)

    def tenant_of(self, token: str) -> str | None:
        """The token's tenant, or None for a token not in the table."""
        return self.tenant_of_digest(token_digest(token))

    def tenant_of_digest(self, presented: bytes) -> str | None:
        """The tenant of the token with this SHA-256 digest, or None."""
        found: str | None = None
        # No early exit: every check costs the same, match or not.
        for digest, tenant in self._entries:
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found


def _entry(token: str, tenant: str, where: str) -> tuple[bytes, str]:
    if not TENANT_NAME.fullmatch(tenant):
        raise ValueError(f"{where}: tenant {tenant!r} must be 1-128 letters, digits or . _ @ -")
    if token.startswith(HASH_PREFIX):
        hex_digest = token[len(HASH_PREFIX) :].lower()
        if not _DIGEST.fullmatch(hex_digest):
            raise ValueError(f"{where}: {HASH_PREFIX} must be followed by 64 hex digits")
        return bytes.fromhex(hex_digest), tenant
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{where}: a token is printable ASCII without spaces")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"{where}: the token is shorter than {MIN_TOKEN_LENGTH} characters; "
            "make one with `openssl rand -hex 32`"
        )
    return token_digest(token), tenant


def parse_token_file(text: str, source: str) -> list[tuple[bytes, str]]:
    """`TOKEN TENANT` or `sha256:HEX TENANT` per line; `#` starts a comment."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.partition("#")[0].split()
        if not words:
            continue
        where = f"{source} line {number}"
        if len(words) != 2:
            raise ValueError(f"{where}: expected 'TOKEN TENANT' or 'sha256:HEX TENANT'")
        entries.append(_entry(words[0], words[1], where))
    return entries


def parse_token_list(text: str, source: str) -> list[tuple[bytes, str]]:
    """`TOKEN=TENANT` pairs separated by commas; a token may itself end in `=`."""
    entries = []
    for number, item in enumerate(text.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        token, sep, tenant = item.rpartition("=")
        where = f"{source} entry {number}"
        if not sep or not token:
            raise ValueError(f"{where}: expected TOKEN=TENANT or sha256:HEX=TENANT")
        entries.append(_entry(token, tenant, where))
    return entries


def load_tokens(config: ServerConfig) -> TokenTable | None:
    """The configured tokens, or None when authentication is off.

    A source that is set but names no token is an error: it must never
    switch authentication off by accident.
    """
    entries: list[tuple[bytes, str]] = []
    if config.auth_tokens_file:
        try:
            with open(config.auth_tokens_file, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"cannot read --auth-tokens-file {config.auth_tokens_file!r}: {exc}"
            ) from None
        found = parse_token_file(text, config.auth_tokens_file)
        if not found:
            raise ValueError(f"--auth-tokens-file {config.auth_tokens_file!r} names no tokens")
        entries += found
    if config.auth_tokens:
        found = parse_token_list(config.auth_tokens, "CONVEYOR_AUTH_TOKENS")
        if not found:
            raise ValueError("CONVEYOR_AUTH_TOKENS names no tokens")
        entries += found
    if not entries:
        return None
    tenants: dict[bytes, str] = {}
    for digest, tenant in entries:
        if tenants.setdefault(digest, tenant) != tenant:
            raise ValueError(f"one token is given for two tenants: {tenants[digest]}, {tenant}")
    return TokenTable(tenants.items())


def _bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the first `authorization` entry; "" when it is not Bearer."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else ""
    return None


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def _refusal(handler: Handler, message: str) -> Handler:
    """A handler of the same kind as `handler` that refuses the call."""

    async def refuse(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # No deserializer: the request of a refused call is never parsed.
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def _as_tenant(handler: Handler, tenant: str) -> Handler:
    """`handler` with the tenant set for the code it runs.

    Only TaskService is wrapped, and it has unary calls and one
    server-streaming call written as an async generator.
    """
    if handler.unary_unary is not None:
        # The stubs type behaviours for the sync server; these are async.
        unary: Any = handler.unary_unary

        async def unary_call(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            # The RPC's task owns this context: nothing to reset.
            _tenant.set(tenant)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream

        async def stream_call(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            _tenant.set(tenant)
            async with contextlib.aclosing(stream(request, context)) as responses:
                async for response in responses:
                    yield response

        return grpc.unary_stream_rpc_method_handler(
            stream_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    raise TypeError("client-streaming methods are not supported")


class TokenAuthInterceptor(aio.ServerInterceptor):
    """Refuses calls without a known bearer token (UNAUTHENTICATED) and runs
    the others as the token's tenant."""

    def __init__(self, tokens: TokenTable, observer: TaskObserver = NULL_OBSERVER) -> None:
        self._tokens = tokens
        # Refused calls never reach the servicer, which counts the others.
        self._observer = observer
        # Wrapped handlers by (method, tenant or refusal): a few per method.
        self._handlers: dict[tuple[str, str], Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        token = _bearer_token(handler_call_details.invocation_metadata)
        if token is None:
            message = MISSING
        elif not token:
            message = MALFORMED
        else:
            tenant = self._tokens.tenant_of(token)
            if tenant is not None:
                wrapped = self._handlers.get((method, tenant))
                if wrapped is None:
                    wrapped = self._handlers[method, tenant] = _as_tenant(handler, tenant)
                return wrapped
            message = UNKNOWN
        logger.info("refused %s: %s", method, message.partition(":")[0])
        self._observer.rpc_handled(method.rpartition("/")[2], "UNAUTHENTICATED", None)
        refusal = self._handlers.get((method, message))
        if refusal is None:
            refusal = self._handlers[method, message] = _refusal(handler, message)
        return refusal
