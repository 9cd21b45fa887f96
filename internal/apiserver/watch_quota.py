"""Caps on the watches one identity holds open at once, and on the catch-ups from etcd's history
running at once (`CatchupQuota`).

Every watch costs the server a stream, a subscription and up to one queue's allowance of
memory; a client that opens watches in a loop (or a tenant's script gone wrong) must not take
them all. Beyond `per_identity` open watches, the next one is refused with RESOURCE_EXHAUSTED
and a RetryInfo; closing one frees its place. An identity is its tenant and user name, so
every token and API key of one user shares one allowance.

A tenant has many users (a tenant admin makes them), so the identity's allowance alone let one
tenant hold every stream the server takes (limits.max_streams, grpc's own cap on calls in
progress): 100 users with 100 watches each held all 10,000, and every other call, the
controller's too, was refused by grpc ("Concurrent RPC limit exceeded!"). So a tenant's watches
(every user of it together, counted by the caller's own tenant) are at most `per_tenant`, and
all tenants' together at most `tenants`, below the streams left once the other limits are
counted: the rest is for platform administrators (the controller's informers), whose watches
count against their identity's allowance only. The refusal's ErrorInfo carries `scope`
(`user`, `tenant` or `tenants`) and `limit`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Callable, Iterator

from tke.internal.auth.identity import Identity
from tke.internal.metrics import CATCHUPS_REFUSED, WATCH_CATCHUPS, WATCHES_REFUSED
from tke.internal.rpc import errors


@contextlib.contextmanager
def _counted(counts: collections.Counter[tuple[str, str]], who: tuple[str, str]) -> Iterator[None]:
    """`who` holds one more of `counts` for the duration of the block (none left: no entry)."""
    counts[who] += 1
    try:
        yield
    finally:
        counts[who] -= 1
        if not counts[who]:
            del counts[who]


class WatchQuota:
    def __init__(
        self, per_identity: int, per_tenant: int | None = None, tenants: int | None = None, retry_after: float = 5.0
    ) -> None:
        """`per_tenant`, `tenants`: None, no limit."""
        self.per_identity = per_identity
        self.per_tenant = per_tenant
        self.tenants = tenants
        self.retry_after = retry_after
        self.open: collections.Counter[tuple[str, str]] = collections.Counter()
        # Tenants' watches (platform administrators' are not counted here), per tenant.
        self.of_tenant: collections.Counter[tuple[str, str]] = collections.Counter()

    @contextlib.contextmanager
    def hold(self, identity: Identity) -> Iterator[None]:
        """One watch of `identity` for the duration of the block; RESOURCE_EXHAUSTED when it, its
        tenant or the tenants together already hold their maximum."""
        who = (identity.tenant_id, identity.user)
        if self.open[who] >= self.per_identity:
            raise self._refusal(
                f"user {identity.user!r} has {self.per_identity} watches open, the most one identity may",
                "user",
                self.per_identity,
            )
        if identity.is_platform_admin:
            with _counted(self.open, who):
                yield
            return
        tenant = (identity.tenant_id, "")
        if self.per_tenant is not None and self.of_tenant[tenant] >= self.per_tenant:
            raise self._refusal(
                f"tenant {identity.tenant_id!r} has {self.per_tenant} watches open, every user of it together, "
                f"the most one tenant may (limits.max_watches_per_tenant)",
                "tenant",
                self.per_tenant,
            )
        if self.tenants is not None and self.of_tenant.total() >= self.tenants:
            raise self._refusal(
                f"the server holds {self.tenants} watches of tenants, the most it takes "
                "(limits.max_watches_of_tenants; the rest is kept for platform administrators)",
                "tenants",
                self.tenants,
            )
        with _counted(self.open, who), _counted(self.of_tenant, tenant):
            yield

    def _refusal(self, why: str, scope: str, limit: int) -> errors.ApiError:
        WATCHES_REFUSED.inc()
        return errors.resource_exhausted(
            f"{why}; close one or retry later",
            reason="TOO_MANY_WATCHES",
            retry_after_seconds=self.retry_after,
            metadata={"scope": scope, "limit": str(limit)},
        )


class CatchupQuota:
    """A cap on the catch-up watches running at once, per identity and for the whole process.

    A watch resuming from a revision older than its hub's window reads etcd's history through an
    etcd watch of its own until it reaches the window (Hub.subscribe, watch.py). etcd keeps what
    that watch has not yet sent in its own memory, for every tenant: measured, one unread
    catch-up over 110 MB of history grew etcd by 150 MB, 50 of them by 6.3 GB. So at most
    `per_identity` of one identity's and `total` of everyone's run at once; beyond, the watch is
    refused with RESOURCE_EXHAUSTED and a RetryInfo before an etcd watch is opened. A catch-up
    holds its place only until it reaches the window (or ends).
    """

    def __init__(self, per_identity: int, total: int, retry_after: float = 5.0) -> None:
        self.per_identity = per_identity
        self.total = total
        self.retry_after = retry_after
        self.running: collections.Counter[tuple[str, str]] = collections.Counter()

    @property
    def count(self) -> int:
        """Catch-ups running now, of every identity."""
        return self.running.total()

    def slot(self, identity: Identity) -> Callable[[], contextlib.AbstractContextManager[None]]:
        """What a hub calls when `identity`'s watch needs a catch-up (see `hold`)."""
        return functools.partial(self.hold, identity)

    @contextlib.contextmanager
    def hold(self, identity: Identity) -> Iterator[None]:
        """One catch-up of `identity` for the duration of the block; RESOURCE_EXHAUSTED when it,
        or the process, already runs its maximum."""
        who = (identity.tenant_id, identity.user)
        if self.running[who] >= self.per_identity:
            busy = f"user {identity.user!r} has {self.per_identity} watches catching up, the most one identity may"
        elif self.count >= self.total:
            busy = f"the server runs {self.total} watches catching up, the most it may"
        else:
            busy = ""
        if busy:
            CATCHUPS_REFUSED.inc()
            raise errors.resource_exhausted(
                f"this watch's resource_version is older than the server's recent changes, so it must catch up from "
                f"etcd's history, and {busy}: retry later, or list again and watch from the list's resource_version",
                reason="TOO_MANY_CATCHUPS",
                retry_after_seconds=self.retry_after,
            )
        WATCH_CATCHUPS.inc()
        try:
            with _counted(self.running, who):
                yield
        finally:
            WATCH_CATCHUPS.dec()
