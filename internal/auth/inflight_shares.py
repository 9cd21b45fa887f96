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
- at most `per_user` of them of one user (below the tenant's share: half of it by default), so
  that one user of a tenant (a runaway script, a leaked API key) cannot take the whole share
  and lock the tenant's other users, its administrator included, out of the API;
- at most `tenants` calls of all tenants together, below the server's limit: the places left
  are for platform administrators (the controller's identity is one, acting in every tenant),
  whose calls are counted by the server's limit only, so tenants cannot starve them;
- calls of open methods (Login, reflection when open) count as one tenant of their own: every
  unauthenticated caller together holds at most one share;
- at most `bytes_per_tenant` bytes of one tenant's read answers (Get and List, which handlers
  return serialized: their size costs nothing) not yet delivered. A count alone bounds a
  tenant's memory only by its share times the biggest answer (80 List pages of 2 MiB); this
  bounds it in bytes. The size is known only once the handler has answered, so an answer that
  would go over is dropped and the call refused (a read changed nothing: asking again is safe),
  and while the tenant is at its bytes, its next calls are refused before any work. A tenant
  holding none always gets one answer, however big. Writes' answers are not counted: dropping
  one would hide a change that was made (they are one object each, at most
  limits.max_object_bytes, and the count bounds them).
- the same bytes hold a tenant's watch messages handed to grpc and not yet taken by their
  client (`hold_message`; the watch streams count them, tke.internal.apiserver.api): a watch is
  a stream, not counted above, and one that never reads holds its next message (a page of its
  initial state, up to 2 MiB) for as long as it likes, so a tenant's users with 100 watches
  each held 2 to 4 MiB per watch, whatever the tenant's share. A message that would go over
  ends its watch with the same refusal; it is a read, so watching again is safe.

Beyond any of them, the call is refused with RESOURCE_EXHAUSTED, an ErrorInfo
`TOO_MANY_REQUESTS` (metadata `scope`: `tenant` or `tenant_bytes`, with `tenant` and `limit`,
`user` with `tenant`, `user` and `limit`, or `tenants` with `limit`) and a RetryInfo (the auth
step audits the refusal). A call holds its place, and its answer its bytes, until grpc has
delivered the response or the call ended otherwise (its done callback), as in the server's
limit. Calls refused by authentication or
authorization never get here and take nothing.

Memory: a counter (and a byte count) per tenant and per user with calls in flight, gone when
its last call ends, and an entry per call in flight; bounded by the server's limit. Per call of
a tenant (the Get and Create path): a context variable, a membership test of the caller's
groups, a key of tenant and user, six dict operations and grpc's done callback (a partial grpc
makes for any callback), two more for a read's answer, and on delivery five or seven; no object
of our own beyond the key (the callback is bound once). A platform administrator's call costs
the first two only.
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
    def __init__(
        self,
        per_tenant: int,
        tenants: int,
        *,
        per_user: int | None = None,
        bytes_per_tenant: int,
        reserved: int = 0,
        retry_after: float = 1.0,
    ) -> None:
        """`per_tenant`: calls of one tenant in flight at once; `per_user`: of one of its users
        (None: `per_tenant`); `tenants`: of all tenants together; `bytes_per_tenant`: bytes of one
        tenant's read answers not yet delivered; `reserved`: the server's places beyond `tenants`
        (for the refusal's message)."""
        if not 1 <= per_tenant <= tenants:
            raise ValueError(f"a tenant's share ({per_tenant}) must be 1 to the tenants' ({tenants})")
        per_user = per_tenant if per_user is None else per_user
        if not 1 <= per_user <= per_tenant:
            raise ValueError(f"a user's share ({per_user}) must be 1 to its tenant's ({per_tenant})")
        if bytes_per_tenant < 1:
            raise ValueError("a tenant's bytes must be 1 or more")
        self.per_tenant = per_tenant
        self.per_user = per_user
        self.tenants = tenants
        self.bytes_per_tenant = bytes_per_tenant
        self.reserved = reserved
        self.retry_after = retry_after
        # Tenant -> its calls in flight, and the bytes of its answers not yet delivered; only
        # tenants with calls (answers) in flight have an entry.
        self.inflight: dict[str, int] = {}
        self.inflight_of_user: dict[tuple[str, str], int] = {}  # (tenant, user) -> calls in flight
        self.bytes_held: dict[str, int] = {}
        self.total = 0  # calls of tenants in flight (platform administrators' are not counted)
        # The context of each counted call in flight -> its (tenant, user), and of each answer
        # held -> its size, for the done callback.
        self._holders: dict[Any, tuple[str, str]] = {}
        self._sizes: dict[Any, int] = {}
        self._on_done = self._release  # bound once: no bound method made per call

    def wrap(self, call: Call, method: Method) -> Call:
        if not counted(method):
            return call

        async def shared(request: Any, context: Context) -> Any:
            identity = current_identity.get()
            if identity.is_platform_admin:
                return await call(request, context)
            tenant = identity.tenant_id
            # Unauthenticated callers are one user (nobody): their tenant's share is theirs.
            user = (tenant, identity.user if tenant != ANONYMOUS else "")
            held = self.inflight.get(tenant, 0)
            of_user = self.inflight_of_user.get(user, 0)
            if (
                held >= self.per_tenant
                or of_user >= self.per_user
                or self.total >= self.tenants
                or tenant in self.bytes_held
            ):
                self._admit_or_refuse(user, held, of_user)
            self.inflight[tenant] = held + 1
            self.inflight_of_user[user] = of_user + 1
            self.total += 1
            self._holders[context] = user
            # (grpc calls any callable with the context; the typing stubs name a class of their own)
            context.add_done_callback(self._on_done)  # type: ignore[arg-type]
            response = await call(request, context)
            if type(response) is bytes:  # a read's answer (Get, List), serialized already: its size is free
                self._hold_bytes(tenant, context, len(response))
            return response

        return shared

    def _admit_or_refuse(self, user: tuple[str, str], held: int, of_user: int) -> None:
        """The slow path of admission: a share or the tenants' places are full, or the tenant has
        answers not yet delivered."""
        tenant = user[0]
        if held >= self.per_tenant or self.total >= self.tenants:
            raise self._refusal(tenant, held)
        if of_user >= self.per_user and tenant != ANONYMOUS:  # nobody's share is its tenant's
            raise self._user_refusal(user, of_user)
        if (answers := self.bytes_held.get(tenant, 0)) >= self.bytes_per_tenant:
            raise self._bytes_refusal(tenant, answers)

    def _hold_bytes(self, tenant: str, context: Any, size: int) -> None:
        """The answer of `size` bytes waits for its client: counted until delivered, or refused
        when the tenant's answers not yet delivered would go over their bytes (a read changes
        nothing, so it is safe to ask again). A tenant holding none always gets one answer."""
        self.hold_message(tenant, size)
        self._sizes[context] = size

    def hold_message(self, tenant: str, size: int) -> None:
        """`size` bytes of a message of `tenant` wait for their client (an answer, a watch's
        message), until `release_message`; refused as `_hold_bytes` says."""
        held = self.bytes_held.get(tenant, 0)
        if held and held + size > self.bytes_per_tenant:
            raise self._bytes_refusal(tenant, held)
        self.bytes_held[tenant] = held + size

    def release_message(self, tenant: str, size: int) -> None:
        """The message of `hold_message` was taken (or dropped)."""
        left = self.bytes_held[tenant] - size
        if left:
            self.bytes_held[tenant] = left
        else:
            del self.bytes_held[tenant]

    def _release(self, context: Any) -> None:
        # grpc calls a done callback once per call, on the event loop.
        user = self._holders.pop(context)
        tenant = user[0]
        self.total -= 1
        left = self.inflight[tenant] - 1
        if left:
            self.inflight[tenant] = left
        else:
            del self.inflight[tenant]
        left = self.inflight_of_user[user] - 1
        if left:
            self.inflight_of_user[user] = left
        else:
            del self.inflight_of_user[user]
        size = self._sizes.pop(context, 0)
        if size:
            self.release_message(tenant, size)

    def _bytes_refusal(self, tenant: str, held: int) -> errors.ApiError:
        REQUESTS_INFLIGHT_SHARE_REFUSED.inc()
        limit = self.bytes_per_tenant
        return errors.resource_exhausted(
            f"{_who(tenant)} has {_mib(held)} of responses not yet delivered, and may have "
            f"{_mib(limit)} (limits.max_response_bytes_per_tenant = {limit}); read the responses (and watch "
            "events) of earlier requests, or retry shortly",
            reason="TOO_MANY_REQUESTS",
            retry_after_seconds=self.retry_after,
            metadata={"scope": "tenant_bytes", "tenant": tenant, "limit": str(limit)},
        )

    def _user_refusal(self, user: tuple[str, str], held: int) -> errors.ApiError:
        REQUESTS_INFLIGHT_SHARE_REFUSED.inc()
        tenant, name = user
        return errors.resource_exhausted(
            f"user {name!r} of tenant {tenant!r} already has {held} requests in flight, its share of its "
            f"tenant's (limits.max_requests_inflight_per_user = {self.per_user}); a request counts until its "
            "response is delivered: read the responses of earlier requests, or retry shortly",
            reason="TOO_MANY_REQUESTS",
            retry_after_seconds=self.retry_after,
            metadata={"scope": "user", "tenant": tenant, "user": name, "limit": str(self.per_user)},
        )

    def _refusal(self, tenant: str, held: int) -> errors.ApiError:
        REQUESTS_INFLIGHT_SHARE_REFUSED.inc()
        if held >= self.per_tenant:
            return errors.resource_exhausted(
                f"{_who(tenant)} already has {held} requests in flight, its share of the server "
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


def _who(tenant: str) -> str:
    return "unauthenticated callers" if tenant == ANONYMOUS else f"tenant {tenant!r}"


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
