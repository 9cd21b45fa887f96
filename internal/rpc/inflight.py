"""A cap on the unary calls a server serves at once (Kubernetes' max-requests-inflight).

Beyond `limit` calls in flight, a new call is refused at once with RESOURCE_EXHAUSTED and a
RetryInfo, before authentication or any work: a flood costs the server a refusal per call,
not a queue that grows with it. A call is in flight from its start until grpc has delivered its
response (or the call ended otherwise), so clients that send calls and never read the answers
hold at most `limit` responses in the server's memory, not one per call they send. Streams
(watches) are long-running and have their own limits, but reflection's streams count as calls;
health checks are never refused, so a busy server is not taken for a dead one.

This pool is the whole server's; a server with authentication also divides it between tenants
once the caller is known (tke.internal.auth.inflight_shares), so that no tenant holds it all.
"""

from __future__ import annotations

from typing import Any

from tke.internal.metrics import REQUESTS_INFLIGHT_REFUSED
from tke.internal.rpc import errors
from tke.internal.rpc.interceptors import Call, Context, Method

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
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


class InflightLimit:
    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.inflight = 0

    def wrap(self, call: Call, method: Method) -> Call:
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
