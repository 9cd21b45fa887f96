"""Signed, expiring bearer tokens for built-in accounts: "tke1.<payload>.<signature>", where the
payload is JSON {"sub", "uid", "iat" (milliseconds), "exp" (seconds), "jti"} and the signature
HMAC-SHA256 with the server's secret. "uid" binds the token to one user record: a user deleted
and created again under the same name is another user, and its predecessor's tokens do not work
for it. Verifying needs no storage read; revocation is checked by the caller against its
in-memory list. Several apiservers verify each other's tokens when they share the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

PREFIX = "tke1."


class TokenError(Exception):
    """The token is ours but invalid; the message is safe to show."""


@dataclass(frozen=True)
class Claims:
    subject: str
    uid: str
    issued_at: float  # seconds, with millisecond precision: a password change in the same second still tells
    expires_at: int
    token_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the token signing secret must be at least 32 bytes")
        self._secret = secret

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, subject: str, uid: str, ttl_seconds: int, now: float | None = None) -> tuple[str, Claims]:
        issued_ms = int((now if now is not None else time.time()) * 1000)
        claims = Claims(subject, uid, issued_ms / 1000, issued_ms // 1000 + ttl_seconds, secrets.token_urlsafe(12))
        body = {"sub": subject, "uid": uid, "iat": issued_ms, "exp": claims.expires_at, "jti": claims.token_id}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{PREFIX}{payload}.{self._sign(payload)}", claims

    def verify(self, token: str, now: float | None = None) -> Claims:
        if not token.startswith(PREFIX):
            raise TokenError("not a platform token")
        payload, _, signature = token[len(PREFIX) :].partition(".")
        if not payload or not signature or not hmac.compare_digest(self._sign(payload), signature):
            raise TokenError("token signature is invalid")
        try:
            body = json.loads(_unb64(payload))
            claims = Claims(
                str(body["sub"]), str(body.get("uid", "")), int(body["iat"]) / 1000, int(body["exp"]), str(body["jti"])
            )
        except (ValueError, KeyError, TypeError):
            raise TokenError("token payload is invalid") from None
        if (now if now is not None else time.time()) >= claims.expires_at:
            raise TokenError("token has expired: log in again")
        return claims
