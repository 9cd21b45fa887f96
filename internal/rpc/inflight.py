"""A cap on the unary calls a server serves at once (Kubernetes' max-requests-inflight).

Beyond `limit` calls in flight, a new call is refused at once with RESOURCE_EXHAUSTED and a
RetryInfo, before authentication or any work: a flood costs the server a refusal per call,
not a queue that grows with it. A call is in flight from its start until grpc has delivered its
response (or the call ended otherwise), so clients that send calls and never read the answers
hold at most `limit` responses in the server's memory, not one per call they send. Streams
(watches) are long-running and have their own limits, but reflection's streams count as calls;
health checks are not counted, so a busy server is not taken for a dead one. The health
service is open to anyone, though, so its calls have caps of their own, each counted until the
answer is delivered: `health_watches` (Health/Watch, a stream held as long as its client likes,
about 13 KB each: 10,000 unauthenticated ones had grown the apiserver by 132 MB) and
`health_checks` (Health/Check answers a client has not read, about 9 KB each: 20,000 had grown
it by 185 MB). Beyond either, RESOURCE_EXHAUSTED. A prober reads its answer at once, so it
finds the checks full only while someone holds that many unread.

This pool is the whole server's; a server with authentication also divides it between tenants
once the caller is known (tke.internal.auth.inflight_shares), so that no tenant holds it all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tke.internal.metrics import REQUESTS_INFLIGHT_REFUSED
from tke.internal.rpc import errors
from tke.internal.rpc.interceptors import Call, Context, Method

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# Health watches held at once by default: a client that checks health by watching (gRPC's
# client-side health checking) holds one per connection.
HEALTH_WATCHES = 1_000
# Health checks whose answers are not yet delivered, by default: probers read theirs at once.
HEALTH_CHECKS = 1_000
# Reflection's streams are counted like unary calls: each is short (one per grpcurl command),
# and nothing else bounds them, while every one whose client stops reading holds a response of
# descriptors (about 50 KB) in the server's memory.
COUNTED_STREAM_PREFIXES = ("/grpc.reflection.",)
# The ErrorInfo metadata of this refusal: the server's whole limit, not a tenant's share
# (tke.internal.auth.inflight_shares).
SCOPE_SERVER = {"scope": "server"}


def counted(method: Method) -> bool:
    """Whether calls of `method` count as calls in flight (here, and in a tenant's share)."""
    if method.name.startswith(EXEMPT_PREFIXES):
        return False
    return not method.streaming or method.name.startswith(COUNTED_STREAM_PREFIXES)


@dataclass
class HealthCap:
    """Calls of one health method held at once: `limit`, and a refusal naming `what` they are."""

    limit: int
    what: str
    reason: str
    hint: str
    held: int = 0

    def release(self, _: object) -> None:
        self.held -= 1  # grpc calls a done callback once per call, on the event loop


class InflightLimit:
    def __init__(
        self,
        limit: int,
        retry_after: float = 1.0,
        health_watches: int = HEALTH_WATCHES,
        health_checks: int = HEALTH_CHECKS,
    ) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.inflight = 0
        self.health = {
            HEALTH_WATCH: HealthCap(
                health_watches, "health watches", "TOO_MANY_HEALTH_WATCHES", "use Health/Check, or watch again later"
            ),
            HEALTH_CHECK: HealthCap(
                health_checks,
                "health checks whose answers are not yet read",
                "TOO_MANY_HEALTH_CHECKS",
                "read the answers of earlier checks, or retry shortly",
            ),
        }

    def wrap(self, call: Call, method: Method) -> Call:
        if (cap := self.health.get(method.name)) is not None:
            return self._health(call, cap)
        if not counted(method):
            return call

        async def limited(request: Any, context: Context) -> Any:
            if self.inflight >= self.limit:
                REQUESTS_INFLIGHT_REFUSED.inc()
                raise errors.resource_exhausted(
                    f"the server is serving its maximum of {self.limit} requests at once; retry shortly",
                    reason="TOO_MANY_REQUESTS",
                    retry_after_seconds=self.retry_after,
                    metadata=SCOPE_SERVER,
                )
            self.inflight += 1
            # The call holds its place until grpc has delivered its response (or the call ended
            # otherwise), not only while the handler runs: a client that stops reading keeps
            # its response in the server's memory, and those are bounded by `limit` too.
            # (grpc calls any callable; the typing stubs name a class of their own)
            context.add_done_callback(self._release)  # type: ignore[arg-type]
            return await call(request, context)

        return limited

    def _release(self, _: object) -> None:
        self.inflight -= 1  # grpc calls a done callback once per call, on the event loop

    def _health(self, call: Call, cap: HealthCap) -> Call:
        async def limited(request: Any, context: Context) -> Any:
            if cap.held >= cap.limit:
                REQUESTS_INFLIGHT_REFUSED.inc()
                raise errors.resource_exhausted(
                    f"the server holds its maximum of {cap.limit} {cap.what}; {cap.hint}",
                    reason=cap.reason,
                    retry_after_seconds=self.retry_after,
                )
            cap.held += 1
            context.add_done_callback(cap.release)  # type: ignore[arg-type]
            return await call(request, context)

        return limited
