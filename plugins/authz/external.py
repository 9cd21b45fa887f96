"""An external authorizer over our gRPC contract (tke.auth.v1.ExternalAuthorizer): the adaptor
to a cloud's access management (CAM) or a company's policy centre decides. Decisions are cached
briefly per (identity, verb, resource, name, tenant). When it cannot be reached the answer is
DENY (fail closed) with the reason. Entry point `external` of `tke.authz`; options `address`,
`ca_file`/`cert_file`/`key_file` (TLS), `timeout` (seconds, default 2), `cache_ttl` (seconds,
default 5)."""

from __future__ import annotations

import time
from typing import Any

import grpc

from tke.auth.v1 import external_pb2, external_pb2_grpc
from tke.internal.auth.authz import Attributes, Decision
from tke.internal.rpc.client import channel

_DECISIONS = {
    external_pb2.DECISION_ALLOW: Decision.ALLOW,
    external_pb2.DECISION_NO_OPINION: Decision.NO_OPINION,
}
MAX_CACHE = 10_000


class ExternalAuthorizer:
    def __init__(
        self,
        context: Any = None,
        *,
        address: str,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        timeout: float = 2.0,
        cache_ttl: float = 5.0,
    ) -> None:
        self._channel = channel(address, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        self._stub = external_pb2_grpc.ExternalAuthorizerStub(self._channel)
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self._cache: dict[tuple[Any, ...], tuple[float, Decision, str]] = {}

    async def stop(self) -> None:
        await self._channel.close()

    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        ident = attributes.identity
        key = (
            ident.user,
            ident.uid,
            ident.groups,
            ident.tenant_id,
            attributes.verb,
            attributes.resource,
            attributes.name,
            attributes.tenant,
        )
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] >= now:
            return cached[1], cached[2]
        request = external_pb2.AuthorizeRequest(
            identity=external_pb2.Identity(
                user=ident.user,
                uid=ident.uid,
                groups=list(ident.groups),
                tenant_id=ident.tenant_id,
                extra={k: ",".join(v) for k, v in ident.extra.items() if not k.startswith("token")},
            ),
            verb=attributes.verb,
            resource=attributes.resource,
            name=attributes.name,
            tenant_id=attributes.tenant,
        )
        try:
            resp = await self._stub.Authorize(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            return Decision.DENY, f"the external authorizer is unavailable ({err.code().name})"
        decision = _DECISIONS.get(resp.decision, Decision.DENY)
        if len(self._cache) >= MAX_CACHE:
            self._cache.clear()
        self._cache[key] = (now + self.cache_ttl, decision, resp.reason)
        return decision, resp.reason
