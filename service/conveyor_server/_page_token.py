"""Opaque, signed page tokens for ListTasks and ListSchedules (AIP-158).

A token carries the cursor and a digest of the filters it was minted for,
signed with the server's key, so a forged, edited or foreign token (another
query, another tenant, another list, another server key) is refused instead
of silently returning the wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from conveyor_server.stores import ListQuery


class BadPageToken(ValueError):
    pass


def _filter_digest(query: ListQuery) -> str:
    shape: list[object] = [
        sorted(int(s) for s in query.states),
        query.type,
        sorted(query.labels),
        query.tenant,
    ]
    if query.created_after is not None or query.created_before is not None:
        # Only when set: tokens minted before these filters existed stay good.
        shape += [query.created_after, query.created_before]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


class PageTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    def mint(self, query: ListQuery, cursor: int) -> str:
        return self._mint(cursor, _filter_digest(query))

    def read(self, token: str, query: ListQuery) -> int:
        """The cursor in `token`; raises BadPageToken with the reason."""
        cursor = self._read(
            token,
            _filter_digest(query),
            "repeat the request with the same states, type, labels, created_after and "
            "created_before",
        )
        if not isinstance(cursor, int) or cursor < 0:
            raise BadPageToken(_FOREIGN)
        return cursor

    def mint_after(self, scope: str, last: str) -> str:
        """A token for the page after the item named `last`, of a list
        ordered by name; `scope` names the list (and its tenant)."""
        return self._mint(last, _scope_digest(scope))

    def read_after(self, token: str, scope: str) -> str:
        """The name in a `mint_after` token; raises BadPageToken."""
        last = self._read(token, _scope_digest(scope), "repeat the same request")
        if not isinstance(last, str):
            raise BadPageToken(_FOREIGN)
        return last

    def _mint(self, cursor: int | str, digest: str) -> str:
        body = json.dumps({"c": cursor, "f": digest}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(body + self._sign(body)).decode().rstrip("=")

    def _read(self, token: str, digest: str, advice: str) -> object:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise BadPageToken(_FOREIGN) from None
        body, signature = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(signature, self._sign(body)):
            raise BadPageToken(_FOREIGN)
        try:
            decoded = json.loads(body)
            cursor = decoded["c"]
            found = decoded["f"]
        except (ValueError, KeyError, TypeError):
            raise BadPageToken(_FOREIGN) from None
        if found != digest:
            raise BadPageToken(
                f"page_token was issued for other filters; {advice}, or drop the token "
                "to start over"
            )
        return cursor


_FOREIGN = "page_token is not a token this server issued"


def _scope_digest(scope: str) -> str:
    return hashlib.sha256(json.dumps(["scope", scope]).encode()).hexdigest()[:16]
