"""Page tokens: where the next page of a listing starts, sealed so that only tokens this
platform issued, for this very query, are accepted back.

A token is the URL-safe base64 of: a version byte, a MAC, and a small JSON payload (the
position, for example the next key and the list's revision). The MAC is an HMAC-SHA256 over
the payload and the query the token was issued for (the kind, the tenant, the selector, the
page size, the filters), so a token is refused when it was made up or altered, when it comes
from another tenant's or another query's listing, or when it is not a token at all. Servers
that share the key accept each other's tokens (a list may go on at another apiserver).

The payload is not secret (a client may decode it); it is only unforgeable. Callers still
check what the payload says (a revision newer than the store's, a position outside the
listing) since a key can leak; a refused token is the caller's INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

VERSION = 1
_MAC_BYTES = 16
MAX_TOKEN_CHARS = 4096  # far above any token issued: a bigger one is refused unread


class TokenError(ValueError):
    """Not a token issued for this query."""


class PageTokens:
    """Seals and opens page tokens with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a page token key needs at least 16 bytes")
        self._key = key

    def _mac(self, query: bytes, payload: bytes) -> bytes:
        # The query's length first, so that no (query, payload) pair reads as another one.
        message = len(query).to_bytes(8, "big") + query + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def seal(self, query: bytes, position: dict[str, Any]) -> str:
        payload = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        raw = bytes([VERSION]) + self._mac(query, payload) + payload
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def open(self, query: bytes, token: str) -> dict[str, Any]:
        """The position sealed in `token`; TokenError unless this key sealed it for `query`."""
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise TokenError("not a page token")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise TokenError("not a page token") from None
        if len(raw) <= 1 + _MAC_BYTES or raw[0] != VERSION:
            raise TokenError("not a page token")
        mac, payload = raw[1 : 1 + _MAC_BYTES], raw[1 + _MAC_BYTES :]
        if not hmac.compare_digest(mac, self._mac(query, payload)):
            raise TokenError("not a token of this listing")
        try:
            position = json.loads(payload)
        except ValueError:
            raise TokenError("not a page token") from None
        if not isinstance(position, dict):
            raise TokenError("not a page token")
        return position
