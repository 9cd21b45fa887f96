"""An external authenticator over our gRPC contract (tke.auth.v1.ExternalAuthenticator): a
company's own account system answers who owns a bearer token. Answers are cached briefly
(keyed by a hash of the token, never the token). When the service cannot be reached the call
fails closed with UNAUTHENTICATED. Entry point `external` of `tke.authn`; options `address`,
`ca_file`/`cert_file`/`key_file` (TLS), `timeout` (seconds, default 2), `cache_ttl` (seconds,
default 10)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import grpc

from tke.auth.v1 import external_pb2, external_pb2_grpc
from tke.internal.auth.authn import AuthenticationError, Credentials
from tke.internal.auth.identity import DEFAULT_TENANT, Identity
from tke.internal.rpc.client import channel

MAX_CACHE = 10_000


def identity_from(message: external_pb2.Identity) -> Identity:
    return Identity(
        user=message.user,
        uid=message.uid,
        groups=tuple(message.groups),
        tenant_id=message.tenant_id or DEFAULT_TENANT,
        extra={k: (v,) for k, v in message.extra.items()},
    )


class ExternalAuthenticator:
    def __init__(
        self,
        context: Any = None,
        *,
        address: str,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        timeout: float = 2.0,
        cache_ttl: float = 10.0,
    ) -> None:
        self._channel = channel(address, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        self._stub = external_pb2_grpc.ExternalAuthenticatorStub(self._channel)
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, Identity | None, str]] = {}

    async def stop(self) -> None:
        await self._channel.close()

    async def authenticate(self, credentials: Credentials) -> Identity | None:
        token = credentials.bearer_token
        if not token:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is None or cached[0] < now:
            try:
                resp = await self._stub.Authenticate(
                    external_pb2.AuthenticateRequest(token=token), timeout=self.timeout
                )
            except grpc.aio.AioRpcError as err:
                raise AuthenticationError(f"the external authenticator is unavailable ({err.code().name})") from None
            identity = identity_from(resp.identity) if resp.authenticated else None
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
            cached = (now + self.cache_ttl, identity, resp.error)
            self._cache[key] = cached
        _, identity, error = cached
        if identity is None and error:
            raise AuthenticationError(error)
        return identity
