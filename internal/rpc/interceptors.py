"""The server's interceptor chain as grpc runs it, and its first step: request id, access log
and error mapping.

The chain (`CallChain`) is the one grpc.aio interceptor of a server. Its steps (`Interceptor`:
the request step here, metrics, the in-flight limit, authentication + authorization + audit)
each wrap a method's handler once, the first time the method is called, and the wrapped handler
is reused for every later call: per call, a step costs one coroutine frame, and a step with
nothing to do for a method (the in-flight limit for a stream, say) costs nothing. A step's
wrapped call is awaited; for a response-streaming method its result is the async iterator of
the responses.

The request step:
- Each call gets a request id (the client's x-request-id header, or a new one), kept in a
  context variable for logs and audit and sent back in the trailing metadata of a unary call
  (with its status, so it costs no extra operation) and in the initial metadata of a stream
  (once per stream, before its first response).
- ApiError becomes its rich status; storage unavailability becomes UNAVAILABLE, a full storage
  (etcd's NOSPACE) RESOURCE_EXHAUSTED naming the cause, a write over the storage's size limit
  INVALID_ARGUMENT; anything else becomes INTERNAL with the request id, and its traceback goes
  to the server log only.
- The access log: one line per call, built only when a handler will write it: at INFO, except
  that a server whose audit log records every call (`audited`) logs the calls that succeeded
  at DEBUG; failures are at INFO either way.
- Streaming calls are wrapped so that errors raised while streaming are mapped the same way.

Requests whose bytes do not parse as the method's message get INVALID_ARGUMENT with a
BadRequest (field `request`, and the parser's one-line reason) instead of grpcio's UNKNOWN
carrying the parser's exception text: they pass through the same steps (request id, access
line, metrics, authentication first), to a refusal in place of the handler. So does the request
of a call that streams its responses (a watch) over MAX_STREAM_REQUEST_BYTES: it is kept for as
long as the stream lasts (by the handler's frames, and in the filters it names), and grpc admits
requests up to limits.max_request_bytes (4 MiB) for every method, so 50 watches naming an event
filter of 3.9 MB held 654 MiB for as long as they stayed open. A watch's fields are a few
kilobytes at most (a label selector is at most 4096 characters).
Methods that stream their requests (reflection) and handlers that send their responses with
grpc's write API (health's Watch) go through the same steps.
"""

from __future__ import annotations

import contextvars
import inspect
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_status import rpc_status

from tke.internal.logs import request_id_var
from tke.internal.rpc.errors import ApiError, internal, invalid_field, resource_exhausted, unavailable
from tke.internal.storage.store import NoSpace, TooLarge, Unavailable

log = logging.getLogger("tke.access")

REQUEST_ID_HEADER = "x-request-id"

Context = grpc.aio.ServicerContext[Any, Any]
# A method's handler as the steps see it: awaited, it gives the response (a unary method) or the
# async iterator of the responses (a response-streaming method).
Call = Callable[[Any, Context], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    """What a step may know of a method when it wraps it."""

    name: str  # "/package.Service/Method"
    streaming: bool  # the method streams its responses


class Interceptor(Protocol):
    def wrap(self, call: Call, method: Method) -> Call:
        """`call` with this step around it (or `call` itself when the step has nothing to do)."""
        ...


class _Undecodable:
    """A request whose bytes did not decode, and why (protobuf's message, never a traceback)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


class CallChain(grpc.aio.ServerInterceptor):
    """The steps, outermost first, around every method's handler; each method is wrapped once."""

    def __init__(self, steps: Sequence[Interceptor]) -> None:
        self.steps = list(steps)
        # method name -> (the handler grpc found, the handler that runs): one per served method.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        name: str = handler_call_details.method
        known = self._wrapped.get(name)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler, name)
        self._wrapped[name] = (handler, wrapped)
        return wrapped

    def _chain(self, call: Call, method: Method) -> Call:
        for step in reversed(self.steps):
            call = step.wrap(call, method)
        return call

    def _wrap(self, handler: Any, name: str) -> Any:
        method = Method(name, bool(handler.response_streaming))
        serialize = handler.response_serializer
        inner: Any = (handler.unary_stream or handler.stream_stream) if method.streaming else None
        call: Call = handler.unary_unary or handler.stream_unary
        if method.streaming:

            async def responses(request: Any, context: Context) -> Any:
                result = inner(request, context)
                if inspect.iscoroutine(result):  # grpc's write API: the handler sends its own responses
                    await result
                    return _no_responses()
                return result

            call = responses
        chained = self._chain(call, method)

        async def undecodable(request: Any, context: Context) -> Any:
            raise invalid_field("request", f"is not a valid request message for {name}: {request.why}")

        # An undecodable request goes through the steps too (request id, access log, metrics,
        # authentication first), to a refusal with a BadRequest instead of the handler; that
        # chain is made the first time one comes.
        refusing: list[Call] = []

        async def refused(request: Any, context: Context) -> Any:
            if not refusing:
                refusing.append(self._chain(undecodable, method))
            return await refusing[0](request, context)

        async def run(request: Any, context: Context) -> Any:
            if type(request) is _Undecodable:
                return await refused(request, context)
            return await chained(request, context)

        async def run_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if type(request) is _Undecodable:
                await refused(request, context)
            async for item in await chained(request, context):
                yield item

        if handler.request_streaming:
            factory = (
                grpc.stream_stream_rpc_method_handler if method.streaming else grpc.stream_unary_rpc_method_handler
            )
            return factory(
                run_stream if method.streaming else run,
                request_deserializer=handler.request_deserializer,
                response_serializer=serialize,
            )
        deserialize = handler.request_deserializer

        def safe(data: bytes) -> Any:
            if method.streaming and len(data) > MAX_STREAM_REQUEST_BYTES:
                return _Undecodable(
                    f"{len(data)} bytes, more than the {MAX_STREAM_REQUEST_BYTES} a request that opens a stream "
                    "may have (it is kept while the stream lasts)"
                )
            try:
                return deserialize(data) if deserialize is not None else data
            except Exception as err:  # protobuf's DecodeError, or a deserializer's own error
                return _Undecodable(str(err) or type(err).__name__)

        if method.streaming:
            return grpc.unary_stream_rpc_method_handler(
                run_stream, request_deserializer=safe, response_serializer=serialize
            )
        return grpc.unary_unary_rpc_method_handler(run, request_deserializer=safe, response_serializer=serialize)


async def _no_responses() -> AsyncIterator[Any]:
    """The responses left to send by a handler that wrote its own: none."""
    return
    yield


# The largest request of a call that streams its responses (see the module's docstring).
MAX_STREAM_REQUEST_BYTES = 64 * 1024


# A new request id is this process's random prefix and a counter (32 hex digits, as a uuid's):
# unique across processes and restarts, without a uuid4's system call per call.
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)


# The metadata of the call being served, read from grpc once by the request step (each read
# converts grpc's array again) for the steps after it (authentication's credentials).
call_metadata: contextvars.ContextVar[tuple[tuple[str, Any], ...] | None] = contextvars.ContextVar(
    "call_metadata", default=None
)


def _request_id(context: Context) -> str:
    metadata = tuple(context.invocation_metadata() or ())
    call_metadata.set(metadata)
    for key, value in metadata:
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
            return value
    return f"{_ID_PREFIX}{next(_ids):016x}"


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
            "the request is larger than the platform's storage accepts in one write (etcd's --max-request-bytes or "
            "--max-txn-ops); make it smaller",
        )
    log.error("request %s failed", request_id, exc_info=err)
    return internal(request_id)


class RequestInterceptor:
    """Request id, access log and error mapping for unary and streaming calls. `audited`: an
    audit log records every call, so the calls that succeeded are logged at DEBUG only."""

    def __init__(self, *, audited: bool = False) -> None:
        self.ok_level = logging.DEBUG if audited else logging.INFO

    def wrap(self, call: Call, method: Method) -> Call:
        name = method.name
        ok_level = self.ok_level
        if method.streaming:

            async def stream(request: Any, context: Context) -> Any:
                request_id = _request_id(context)
                request_id_var.set(request_id)
                started = time.perf_counter()
                try:
                    # A stream's headers go out once, before its first response.
                    await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
                    responses = await call(request, context)
                except grpc.aio.AbortError:
                    _log(name, request_id, context, started, ok_level)
                    raise
                except Exception as err:
                    await _abort(err, context, name, request_id, started)
                return _stream(responses, context, name, request_id, started, ok_level=ok_level)

            return stream

        async def unary(request: Any, context: Context) -> Any:
            request_id = _request_id(context)
            request_id_var.set(request_id)
            started = time.perf_counter()
            # Sent with the status, in the same operation: no extra trip through grpc's core.
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            try:
                result = await call(request, context)
            except grpc.aio.AbortError:
                _log(name, request_id, context, started, ok_level)
                raise
            except Exception as err:
                await _abort(err, context, name, request_id, started)
            if log.isEnabledFor(ok_level):
                log.log(ok_level, "%s %s OK %.1fms", request_id, name, (time.perf_counter() - started) * 1000)
            return result

        return unary


async def _stream(
    responses: AsyncIterator[Any], context: Context, name: str, request_id: str, started: float, *, ok_level: int
) -> AsyncIterator[Any]:
    try:
        async for item in responses:
            yield item
    except grpc.aio.AbortError:
        _log(name, request_id, context, started, ok_level)
        raise
    except Exception as err:
        await _abort(err, context, name, request_id, started)
    _log(name, request_id, context, started, ok_level)


async def _abort(err: Exception, context: Context, name: str, request_id: str, started: float) -> None:
    api_error = to_api_error(err, request_id)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%s %s %s %.1fms: %s",
            request_id,
            name,
            api_error.code.name,
            (time.perf_counter() - started) * 1000,
            api_error.message,
        )
    status = rpc_status.to_status(api_error.to_status())
    # The status's own trailers (its details) replace what was set before: the id goes with them.
    await context.abort(status.code, status.details, (*status.trailing_metadata, (REQUEST_ID_HEADER, request_id)))


def _log(name: str, request_id: str, context: Context, started: float, ok_level: int) -> None:
    code = context.code() or grpc.StatusCode.OK
    level = ok_level if code == grpc.StatusCode.OK else logging.INFO
    if not log.isEnabledFor(level):
        return
    code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    log.log(level, "%s %s %s %.1fms", request_id, name, code_name, (time.perf_counter() - started) * 1000)
