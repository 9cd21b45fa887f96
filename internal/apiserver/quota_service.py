"""QuotaService (tke.platform.v1): a tenant's quotas and what it uses of each, read from the
counts this process keeps to admit writes (quota.py), as Kubernetes' ResourceQuota shows
status.hard and status.used.

Invariants:
- Read-only and cheap: an answer is a few dict lookups per resource, no etcd round trip. With
  several apiserver processes each answers from its own watches (and its own writes in
  flight), so a write made through another process shows once its watch has brought it.
- Tenancy as for a List: the authorizers decide the verb "get" on "quotas" in the tenant the
  request names (the caller's when empty); behind any authorizer, even allow-all, a tenant
  the caller has no rights in is PERMISSION_DENIED, the same answer whether that tenant holds
  anything or exists at all. "*" is INVALID_ARGUMENT: one tenant at a time.
"""

from __future__ import annotations

from typing import Any

import grpc

from tke.internal.apiserver.quota import Quotas
from tke.internal.auth.authority import ALL_TENANTS, caller_reaches
from tke.internal.auth.identity import current_identity
from tke.internal.meta.labels import dns1123_label_error
from tke.internal.rpc import errors
from tke.platform.v1 import quota_pb2, quota_pb2_grpc

SERVICE = quota_pb2.DESCRIPTOR.services_by_name["QuotaService"].full_name


class QuotaServicer(quota_pb2_grpc.QuotaServiceServicer):
    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas

    def add_to(self, server: grpc.aio.Server) -> None:
        quota_pb2_grpc.add_QuotaServiceServicer_to_server(self, server)

    async def Get(self, request: quota_pb2.GetQuotaRequest, context: Any) -> quota_pb2.Quota:
        tenant = _tenant(request.tenant_id)
        answer = quota_pb2.Quota(tenant_id=tenant, enabled=self.quotas.config.enabled)
        if answer.enabled:
            for resource, used, limit, option in self.quotas.report(tenant):
                answer.resources.add(resource=resource, used=used, limit=limit, quota=option)
        return answer


def _tenant(requested: str) -> str:
    identity = current_identity.get()
    if not requested or requested == identity.tenant_id:
        return identity.tenant_id
    if requested == ALL_TENANTS:
        raise errors.invalid_field("tenant_id", 'quotas are read one tenant at a time: "*" (every tenant) is not valid')
    if err := dns1123_label_error(requested):
        raise errors.invalid_field("tenant_id", err)
    if not caller_reaches(requested):
        raise errors.permission_denied(
            f"user {identity.user!r} may not get quotas in tenant {requested!r}: it has no rights there"
        )
    return requested
