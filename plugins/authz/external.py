"""An external authorizer over our gRPC contract (tke.auth.v1.ExternalAuthorizer): the adaptor
to a cloud's access management (CAM) or a company's policy centre decides. Decisions are cached
briefly per (identity, verb, resource, name, tenant). When it cannot be reached the answer is
DENY (fail closed) with the reason. Entry point `external` of `tke.authz`; options `address`,
`ca_file`/`cert_file`/`key_file` (TLS), `timeout` (seconds, default 2), `cache_ttl` (seconds,
default 5)."""

from __future__ import annotations

from typing import Any

import grpc

from tke.auth.v1 import external_pb2, external_pb2_grpc
from tke.internal.auth.authz import Attributes, Decision
from tke.internal.auth.external import MISSING, ExternalService

_DECISIONS = {
    external_pb2.DECISION_ALLOW: Decision.ALLOW,
    external_pb2.DECISION_NO_OPINION: Decision.NO_OPINION,
}


class ExternalAuthorizer(ExternalService):
    def __init__(self, context: Any = None, **options: Any) -> None:
        super().__init__(**options)
        self._stub = external_pb2_grpc.ExternalAuthorizerStub(self.channel)

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
        cached = self.cached(key)
        if cached is not MISSING:
            return cached  # type: ignore[no-any-return]
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
        answer = (_DECISIONS.get(resp.decision, Decision.DENY), resp.reason)
        self.remember(key, answer)
        return answer
