"""A trusted front gateway (public clouds): the gateway authenticates the cloud account and
passes it on in headers; the apiserver believes them only when they are signed or come over
mutual TLS from the gateway's own certificate. Entry point `gateway` of `tke.authn`.

Headers: x-tke-account (the account id, like a uin), x-tke-app-id (the tenant, like an appId),
x-tke-timestamp (unix seconds), x-tke-nonce (unique per request), x-tke-signature (hex
HMAC-SHA256 over "account\\napp-id\\ntimestamp\\nnonce" with the shared secret).

Options: `secret_env` (environment variable with the shared secret), `window` (seconds a
signed request stays valid, default 300; nonces are remembered that long so a replay inside
the window is refused too), `gateway_common_names` (certificate CNs trusted without a
signature), `groups` (given to every gateway identity, default ["tke:cloud-users"]).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from tke.internal.auth.authn import AuthenticationError, Credentials
from tke.internal.auth.identity import Identity
from tke.internal.meta.labels import dns1123_label_error

ACCOUNT, APP_ID, TIMESTAMP, NONCE, SIGNATURE = (
    "x-tke-account",
    "x-tke-app-id",
    "x-tke-timestamp",
    "x-tke-nonce",
    "x-tke-signature",
)
MAX_NONCES = 100_000


def sign(secret: bytes, account: str, app_id: str, timestamp: str, nonce: str) -> str:
    message = f"{account}\n{app_id}\n{timestamp}\n{nonce}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class Gateway:
    def __init__(
        self,
        context: Any = None,
        *,
        secret_env: str = "",
        window: int = 300,
        gateway_common_names: list[str] | None = None,
        groups: list[str] | None = None,
    ) -> None:
        self.secret = os.environ.get(secret_env, "").encode() if secret_env else b""
        if secret_env and len(self.secret) < 32:
            raise ValueError(f"gateway: environment variable {secret_env} must hold a secret of at least 32 bytes")
        self.trusted_names = set(gateway_common_names or [])
        if not self.secret and not self.trusted_names:
            raise ValueError("gateway: set secret_env, gateway_common_names, or both")
        self.window = window
        self.groups = tuple(groups if groups is not None else ["tke:cloud-users"])
        self._nonces: OrderedDict[str, float] = OrderedDict()

    def _from_gateway_certificate(self, credentials: Credentials) -> bool:
        if not self.trusted_names or not credentials.peer_certificate_pem:
            return False
        cert = x509.load_pem_x509_certificate(credentials.peer_certificate_pem)
        names = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
        return bool(names & self.trusted_names)

    def _check_signature(self, md: dict[str, str], account: str, app_id: str) -> None:
        timestamp, nonce, signature = md.get(TIMESTAMP, ""), md.get(NONCE, ""), md.get(SIGNATURE, "")
        if not self.secret or not (timestamp and nonce and signature):
            raise AuthenticationError("gateway headers are not signed")
        expected = sign(self.secret, account, app_id, timestamp, nonce)
        if not hmac.compare_digest(expected, signature):
            raise AuthenticationError("gateway signature is invalid")
        try:
            age = time.time() - int(timestamp)
        except ValueError:
            raise AuthenticationError("gateway timestamp is invalid") from None
        if abs(age) > self.window:
            raise AuthenticationError("gateway request is outside the time window (replayed or clock skew)")
        now = time.time()
        while self._nonces and (
            next(iter(self._nonces.values())) < now - self.window or len(self._nonces) > MAX_NONCES
        ):
            self._nonces.popitem(last=False)
        if nonce in self._nonces:
            raise AuthenticationError("gateway request was replayed")
        self._nonces[nonce] = now

    async def authenticate(self, credentials: Credentials) -> Identity | None:
        md = dict(credentials.metadata)
        account, app_id = md.get(ACCOUNT, ""), md.get(APP_ID, "")
        if not account and not app_id:
            return None
        if not account or not app_id:
            raise AuthenticationError("gateway headers need both x-tke-account and x-tke-app-id")
        if not self._from_gateway_certificate(credentials):
            self._check_signature(md, account, app_id)
        if err := dns1123_label_error(app_id):
            raise AuthenticationError(f"x-tke-app-id is not a valid tenant: {err}")
        if len(account) > 128 or not account.isprintable():
            raise AuthenticationError("x-tke-account is not a valid account id")
        return Identity(user=account, uid=f"gateway:{account}", groups=self.groups, tenant_id=app_id)
