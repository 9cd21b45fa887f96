"""A cap on the unary calls a server serves at once (Kubernetes' max-requests-inflight).

Beyond `limit` calls in flight, a new call is refused at once with RESOURCE_EXHAUSTED and a
RetryInfo, before authentication or any work: a flood costs the server a refusal per call,
not a queue that grows with it. Streams (watches) are long-running and have their own limits;
health checks are never refused, so a busy server is not taken for a dead one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc
from grpc_interceptor.server import AsyncServerInterceptor

from tke.internal.metrics import REQUESTS_INFLIGHT_REFUSED
from tke.internal.rpc import errors

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


class InflightLimit(AsyncServerInterceptor):
    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.inflight = 0

    async def intercept(
        self,
        method: Callable[..., Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        response = method(request_or_iterator, context)
        if not inspect.isawaitable(response) or method_name.startswith(EXEMPT_PREFIXES):
            return response if not inspect.isawaitable(response) else await response
        if self.inflight >= self.limit:
            if inspect.iscoroutine(response):
                response.close()  # never started: nothing ran
            REQUESTS_INFLIGHT_REFUSED.inc()
            raise errors.resource_exhausted(
                f"the server is serving its maximum of {self.limit} requests at once; retry shortly",
                reason="TOO_MANY_REQUESTS",
                retry_after_seconds=self.retry_after,
            )
        self.inflight += 1
        try:
            return await response
        finally:
            self.inflight -= 1
