"""A server interceptor that counts every gRPC call by method and status code and times it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc_interceptor.server import AsyncServerInterceptor

from tke.internal.metrics import GRPC_HANDLED, GRPC_LATENCY
from tke.internal.rpc.errors import ApiError
from tke.internal.storage.store import Unavailable


def _code(err: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The status the request interceptor will send for `err`."""
    if isinstance(err, ApiError):
        return str(err.code.name)
    if isinstance(err, Unavailable):
        return "UNAVAILABLE"
    if isinstance(err, grpc.aio.AbortError):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if isinstance(err, Exception):
        return "INTERNAL"
    return "CANCELLED"  # CancelledError, GeneratorExit: the client went away


class MetricsInterceptor(AsyncServerInterceptor):
    """Placed right after the request interceptor, so that it sees what the chain refused too."""

    async def intercept(
        self,
        method: Callable[..., Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        service, _, rpc = method_name.lstrip("/").rpartition("/")
        started = time.perf_counter()
        try:
            response = method(request_or_iterator, context)
            if hasattr(response, "__aiter__"):
                return self._stream(response, context, service, rpc, started)
            result = await response
        except BaseException as err:
            self._observe(service, rpc, _code(err, context), started)
            raise
        self._observe(service, rpc, "OK", started)
        return result

    async def _stream(
        self,
        responses: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, Any],
        service: str,
        rpc: str,
        started: float,
    ) -> AsyncIterator[Any]:
        code = "OK"
        try:
            async for item in responses:
                yield item
        except BaseException as err:
            code = _code(err, context)
            raise
        finally:
            self._observe(service, rpc, code, started)

    @staticmethod
    def _observe(service: str, rpc: str, code: str, started: float) -> None:
        GRPC_HANDLED.labels(service, rpc, code).inc()
        GRPC_LATENCY.labels(service, rpc).observe(time.perf_counter() - started)
