"""The first server interceptor of every chain: request id, access log, and error mapping.

- Each call gets a request id (the client's x-request-id header, or a new one), sent back in
  the initial metadata and kept in a context variable for logs and audit.
- ApiError becomes its rich status; storage unavailability becomes UNAVAILABLE, a full storage
  (etcd's NOSPACE) RESOURCE_EXHAUSTED naming the cause, a write over the storage's size limit
  INVALID_ARGUMENT; anything else becomes INTERNAL with the request id, and its traceback goes
  to the server log only.
- Streaming calls are wrapped so that errors raised while streaming are mapped the same way.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc_interceptor.server import AsyncServerInterceptor
from grpc_status import rpc_status

from tke.internal.logs import request_id_var
from tke.internal.rpc.errors import ApiError, internal, resource_exhausted, unavailable
from tke.internal.storage.store import NoSpace, TooLarge, Unavailable

log = logging.getLogger("tke.access")

REQUEST_ID_HEADER = "x-request-id"


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
            return value
    return uuid.uuid4().hex


def to_api_error(err: Exception, request_id: str) -> ApiError:
    if isinstance(err, ApiError):
        return err
    if isinstance(err, Unavailable):
        if err.ambiguous:
            # etcd may still commit a proposal it had when the connection broke.
            return unavailable(
                "storage is unavailable and the change may or may not have been applied: read before retrying"
            )
        return unavailable("storage is unavailable; retry shortly")
    if isinstance(err, NoSpace):  # (the access log line says it, for every refused write)
        return resource_exhausted(
            "the platform's storage is full (etcd's space quota is reached): writes are refused until an "
            "operator compacts and defragments etcd and disarms its NOSPACE alarm; reads still work",
            reason="STORAGE_FULL",
            retry_after_seconds=30.0,
        )
    if isinstance(err, TooLarge):
        log.warning("request %s: %s", request_id, err)
        return ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request is larger than the platform's storage accepts (etcd's --max-request-bytes); make it smaller",
        )
    log.error("request %s failed", request_id, exc_info=err)
    return internal(request_id)


class RequestInterceptor(AsyncServerInterceptor):
    """Request id, access log and error mapping for unary and streaming calls."""

    async def intercept(
        self,
        method: Callable[..., Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        request_id = _request_id(context)
        request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
            response = method(request_or_iterator, context)
            if hasattr(response, "__aiter__"):
                return self._stream(response, context, method_name, request_id, started)
            result = await response
        except grpc.aio.AbortError:
            self._log(method_name, request_id, context, started)
            raise
        except Exception as err:
            await self._abort(err, context, method_name, request_id, started)
        self._log(method_name, request_id, context, started)
        return result

    async def _stream(
        self,
        responses: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
        request_id: str,
        started: float,
    ) -> AsyncIterator[Any]:
        try:
            async for item in responses:
                yield item
        except grpc.aio.AbortError:
            self._log(method_name, request_id, context, started)
            raise
        except Exception as err:
            await self._abort(err, context, method_name, request_id, started)
        self._log(method_name, request_id, context, started)

    async def _abort(
        self,
        err: Exception,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
        request_id: str,
        started: float,
    ) -> None:
        api_error = to_api_error(err, request_id)
        log.info(
            "%s %s %s %.1fms: %s",
            request_id,
            method_name,
            api_error.code.name,
            (time.perf_counter() - started) * 1000,
            api_error.message,
        )
        await context.abort_with_status(rpc_status.to_status(api_error.to_status()))

    @staticmethod
    def _log(method_name: str, request_id: str, context: grpc.aio.ServicerContext[Any, Any], started: float) -> None:
        code = context.code() or grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        log.info("%s %s %s %.1fms", request_id, method_name, name, (time.perf_counter() - started) * 1000)


_UNDECODABLE = object()


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Requests whose bytes do not parse as the method's message get INVALID_ARGUMENT with a
    message, instead of grpcio's UNKNOWN carrying the parser's exception text. It must be the
    first interceptor: it replaces the handler's deserializer."""

    async def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        deserialize = handler.request_deserializer

        def safe(data: bytes) -> Any:
            try:
                return deserialize(data)
            except Exception:
                return _UNDECODABLE

        refusal = f"the request is not a valid message for {handler_call_details.method}"
        if handler.response_streaming:
            stream = handler.unary_stream

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                if request is _UNDECODABLE:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
                async for item in stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                guarded_stream, request_deserializer=safe, response_serializer=handler.response_serializer
            )
        unary = handler.unary_unary

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if request is _UNDECODABLE:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=safe, response_serializer=handler.response_serializer
        )
