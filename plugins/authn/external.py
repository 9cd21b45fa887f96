"""An external authenticator over our gRPC contract (tke.auth.v1.ExternalAuthenticator): a
company's own account system answers who owns a bearer token. Answers are cached briefly
(keyed by a hash of the token, never the token). When the service cannot be reached the call
fails closed with UNAUTHENTICATED. Entry point `external` of `tke.authn`; options `address`,
`ca_file`/`cert_file`/`key_file` (TLS), `timeout` (seconds, default 2), `cache_ttl` (seconds,
default 10)."""

from __future__ import annotations

import hashlib
from typing import Any

import grpc

from tke.auth.v1 import external_pb2, external_pb2_grpc
from tke.internal.auth.authn import AuthenticationError, Credentials
from tke.internal.auth.external import MISSING, ExternalService
from tke.internal.auth.identity import DEFAULT_TENANT, Identity


def identity_from(message: external_pb2.Identity) -> Identity:
    return Identity(
        user=message.user,
        uid=message.uid,
        groups=tuple(message.groups),
        tenant_id=message.tenant_id or DEFAULT_TENANT,
        extra={k: (v,) for k, v in message.extra.items()},
    )


class ExternalAuthenticator(ExternalService):
    default_cache_ttl = 10.0

    def __init__(self, context: Any = None, **options: Any) -> None:
        super().__init__(**options)
        self._stub = external_pb2_grpc.ExternalAuthenticatorStub(self.channel)

    async def authenticate(self, credentials: Credentials) -> Identity | None:
        token = credentials.bearer_token
        if not token:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        answer = self.cached(key)
        if answer is MISSING:
            try:
                resp = await self._stub.Authenticate(
                    external_pb2.AuthenticateRequest(token=token), timeout=self.timeout
                )
            except grpc.aio.AioRpcError as err:
                raise AuthenticationError(f"the external authenticator is unavailable ({err.code().name})") from None
            answer = (identity_from(resp.identity) if resp.authenticated else None, resp.error)
            self.remember(key, answer)
        identity: Identity | None
        error: str
        identity, error = answer
        if identity is None and error:
            raise AuthenticationError(error)
        return identity
