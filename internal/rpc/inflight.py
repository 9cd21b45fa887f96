"""A cap on the unary calls a server serves at once (Kubernetes' max-requests-inflight).

Beyond `limit` calls in flight, a new call is refused at once with RESOURCE_EXHAUSTED and a
RetryInfo, before authentication or any work: a flood costs the server a refusal per call,
not a queue that grows with it. Streams (watches) are long-running and have their own limits;
health checks are never refused, so a busy server is not taken for a dead one.
"""

from __future__ import annotations

from typing import Any

from tke.internal.metrics import REQUESTS_INFLIGHT_REFUSED
from tke.internal.rpc import errors
from tke.internal.rpc.interceptors import Call, Context, Method

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


class InflightLimit:
    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.inflight = 0

    def wrap(self, call: Call, method: Method) -> Call:
        if method.streaming or method.name.startswith(EXEMPT_PREFIXES):
            return call

        async def limited(request: Any, context: Context) -> Any:
            if self.inflight >= self.limit:
                REQUESTS_INFLIGHT_REFUSED.inc()
                raise errors.resource_exhausted(
                    f"the server is serving its maximum of {self.limit} requests at once; retry shortly",
                    reason="TOO_MANY_REQUESTS",
                    retry_after_seconds=self.retry_after,
                )
            self.inflight += 1
            try:
                return await call(request, context)
            finally:
                self.inflight -= 1

        return limited
