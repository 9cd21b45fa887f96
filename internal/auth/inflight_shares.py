"""Each tenant's share of the calls a server serves at once (Kubernetes' API Priority and
Fairness, in its simplest form: one concurrency share per flow, no queues).

The server's in-flight limit (tke.internal.rpc.inflight) is one pool, taken before
authentication, and a call holds its place until its response is delivered. Alone it lets one
tenant that sends calls and never reads their answers hold every place, and every other caller
is refused for as long as it likes. This step runs after authentication, when the caller is
known, and keeps, for the same calls (unary calls and reflection streams, not health checks or
watches):

- at most `per_tenant` calls of one tenant in flight: every user of the tenant together (a
  tenant admin with many users is one tenant), counted by the caller's own tenant, not the
  tenant a call names, so no caller spends another tenant's share;
- at most `tenants` calls of all tenants together, below the server's limit: the places left
  are for platform administrators (the controller's identity is one, acting in every tenant),
  whose calls are counted by the server's limit only, so tenants cannot starve them;
- calls of open methods (Login, reflection when open) count as one tenant of their own: every
  unauthenticated caller together holds at most one share.

Beyond either, the call is refused with RESOURCE_EXHAUSTED, an ErrorInfo `TOO_MANY_REQUESTS`
(metadata `scope`: `tenant`, with `tenant` and `limit`, or `tenants`) and a RetryInfo, before
the handler runs (the auth step audits the refusal). A call holds its place until grpc has
delivered its response or the call ended otherwise (its done callback), as in the server's
limit. Calls refused by authentication or authorization never get here and take nothing.

Memory: a counter per tenant with calls in flight (it goes when its last call ends) and an
entry per call in flight; both bounded by the server's limit. Per call of a tenant (the Get and
Create path): a context variable, a membership test of the caller's groups, three dict
operations and grpc's done callback (a partial grpc makes for any callback), and on delivery
three more dict operations; no object of our own (the callback is bound once). A platform
administrator's call costs the first two only.
"""

from __future__ import annotations

from typing import Any

from tke.internal.auth.identity import current_identity
from tke.internal.metrics import REQUESTS_INFLIGHT_SHARE_REFUSED
from tke.internal.rpc import errors
from tke.internal.rpc.inflight import counted
from tke.internal.rpc.interceptors import Call, Context, Method

# The "tenant" of calls nobody authenticated (open methods: Identity NOBODY's tenant).
ANONYMOUS = ""


class InflightShares:
    def __init__(self, per_tenant: int, tenants: int, *, reserved: int = 0, retry_after: float = 1.0) -> None:
        """`per_tenant`: calls of one tenant in flight at once; `tenants`: of all tenants
        together; `reserved`: the server's places beyond `tenants` (for the refusal's message)."""
        if not 1 <= per_tenant <= tenants:
            raise ValueError(f"a tenant's share ({per_tenant}) must be 1 to the tenants' ({tenants})")
        self.per_tenant = per_tenant
        self.tenants = tenants
        self.reserved = reserved
        self.retry_after = retry_after
        # Tenant -> its calls in flight; only tenants with calls in flight have an entry.
        self.inflight: dict[str, int] = {}
        self.total = 0  # calls of tenants in flight (platform administrators' are not counted)
        # The context of each counted call in flight -> its tenant, for the done callback.
        self._holders: dict[Any, str] = {}
        self._on_done = self._release  # bound once: no bound method made per call

    def wrap(self, call: Call, method: Method) -> Call:
        if not counted(method):
            return call

        async def shared(request: Any, context: Context) -> Any:
            identity = current_identity.get()
            if identity.is_platform_admin:
                return await call(request, context)
            tenant = identity.tenant_id
            held = self.inflight.get(tenant, 0)
            if held >= self.per_tenant or self.total >= self.tenants:
                raise self._refusal(tenant, held)
            self.inflight[tenant] = held + 1
            self.total += 1
            self._holders[context] = tenant
            # (grpc calls any callable with the context; the typing stubs name a class of their own)
            context.add_done_callback(self._on_done)  # type: ignore[arg-type]
            return await call(request, context)

        return shared

    def _release(self, context: Any) -> None:
        # grpc calls a done callback once per call, on the event loop.
        tenant = self._holders.pop(context)
        self.total -= 1
        left = self.inflight[tenant] - 1
        if left:
            self.inflight[tenant] = left
        else:
            del self.inflight[tenant]

    def _refusal(self, tenant: str, held: int) -> errors.ApiError:
        REQUESTS_INFLIGHT_SHARE_REFUSED.inc()
        if held >= self.per_tenant:
            who = "unauthenticated callers" if tenant == ANONYMOUS else f"tenant {tenant!r}"
            return errors.resource_exhausted(
                f"{who} already has {held} requests in flight, its share of the server "
                f"(limits.max_requests_inflight_per_tenant = {self.per_tenant}); a request counts until its "
                "response is delivered: read the responses of earlier requests, or retry shortly",
                reason="TOO_MANY_REQUESTS",
                retry_after_seconds=self.retry_after,
                metadata={"scope": "tenant", "tenant": tenant, "limit": str(self.per_tenant)},
            )
        return errors.resource_exhausted(
            f"the server is serving its maximum of {self.tenants} requests of tenants at once "
            f"({self.reserved} more are kept for platform administrators); retry shortly",
            reason="TOO_MANY_REQUESTS",
            retry_after_seconds=self.retry_after,
            metadata={"scope": "tenants", "limit": str(self.tenants)},
        )
