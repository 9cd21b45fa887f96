"""Caps on the watches one identity holds open at once, and on the catch-ups from etcd's history
running at once (`CatchupQuota`).

Every watch costs the server a stream, a subscription and up to one queue's allowance of
memory; a client that opens watches in a loop (or a tenant's script gone wrong) must not take
them all. Beyond `per_identity` open watches, the next one is refused with RESOURCE_EXHAUSTED
and a RetryInfo; closing one frees its place. An identity is its tenant and user name, so
every token and API key of one user shares one allowance.
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
    def __init__(self, per_identity: int, retry_after: float = 5.0) -> None:
        self.per_identity = per_identity
        self.retry_after = retry_after
        self.open: collections.Counter[tuple[str, str]] = collections.Counter()

    @contextlib.contextmanager
    def hold(self, identity: Identity) -> Iterator[None]:
        """One watch of `identity` for the duration of the block; RESOURCE_EXHAUSTED when it
        already holds its maximum."""
        who = (identity.tenant_id, identity.user)
        if self.open[who] >= self.per_identity:
            WATCHES_REFUSED.inc()
            raise errors.resource_exhausted(
                f"user {identity.user!r} has {self.per_identity} watches open, the most one identity may; "
                "close one or retry later",
                reason="TOO_MANY_WATCHES",
                retry_after_seconds=self.retry_after,
            )
        with _counted(self.open, who):
            yield


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
