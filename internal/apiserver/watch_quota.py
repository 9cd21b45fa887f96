"""A cap on the watches one identity holds open at once.

Every watch costs the server a stream, a subscription and up to one queue's allowance of
memory; a client that opens watches in a loop (or a tenant's script gone wrong) must not take
them all. Beyond `per_identity` open watches, the next one is refused with RESOURCE_EXHAUSTED
and a RetryInfo; closing one frees its place. An identity is its tenant and user name, so
every token and API key of one user shares one allowance.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator

from tke.internal.auth.identity import Identity
from tke.internal.metrics import WATCHES_REFUSED
from tke.internal.rpc import errors


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
        self.open[who] += 1
        try:
            yield
        finally:
            self.open[who] -= 1
            if not self.open[who]:
                del self.open[who]
