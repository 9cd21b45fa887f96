"""A server step that counts every gRPC call by method and status code and times it. The
method's label children are looked up once, when the chain wraps the method, not per call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from prometheus_client import Counter

from tke.internal.metrics import GRPC_HANDLED, GRPC_LATENCY
from tke.internal.rpc.errors import ApiError
from tke.internal.rpc.interceptors import Call, Context, Method
from tke.internal.storage.store import Unavailable


def _code(err: BaseException, context: Context) -> str:
    """The status the request step will send for `err`."""
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


class _MethodMetrics:
    """One method's counters by code (the codes are grpc's: a bounded set) and its histogram."""

    def __init__(self, method: Method) -> None:
        self.service, _, self.rpc = method.name.lstrip("/").rpartition("/")
        self.handled: dict[str, Counter] = {}
        self.latency = GRPC_LATENCY.labels(self.service, self.rpc)

    def observe(self, code: str, started: float) -> None:
        counter = self.handled.get(code)
        if counter is None:
            counter = self.handled[code] = GRPC_HANDLED.labels(self.service, self.rpc, code)
        counter.inc()
        self.latency.observe(time.perf_counter() - started)


class MetricsInterceptor:
    """Placed right after the request step, so that it sees what the chain refused too."""

    def wrap(self, call: Call, method: Method) -> Call:
        metrics = _MethodMetrics(method)
        if method.streaming:

            async def stream(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                try:
                    responses = await call(request, context)
                except BaseException as err:
                    metrics.observe(_code(err, context), started)
                    raise
                return _stream(responses, context, metrics, started)

            return stream

        async def unary(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            try:
                result = await call(request, context)
            except BaseException as err:
                metrics.observe(_code(err, context), started)
                raise
            metrics.observe("OK", started)
            return result

        return unary


async def _stream(
    responses: AsyncIterator[Any], context: Context, metrics: _MethodMetrics, started: float
) -> AsyncIterator[Any]:
    code = "OK"
    try:
        async for item in responses:
            yield item
    except BaseException as err:
        code = _code(err, context)
        raise
    finally:
        metrics.observe(code, started)
