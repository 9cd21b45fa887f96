"""Assertions on gRPC errors: code and google.rpc details."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar, cast, overload

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

T = TypeVar("T")


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
        assert "Traceback" not in (err.details() or "")
        return err
    raise AssertionError(f"expected {code.name}, the call succeeded")


def status_of(err: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status an error carries in its trailers, or None."""
    # grpc_status reads code(), details() and trailing_metadata(), which the errors of sync
    # and asyncio calls both have; its stubs ask for a grpc.Call, which AioRpcError is not.
    status: status_pb2.Status | None = rpc_status.from_call(err)  # type: ignore[arg-type]
    return status


async def next_message(call: grpc.aio.UnaryStreamCall[Any, T]) -> T:
    """The stream's next message; the stream must not have ended."""
    message = await call.read()
    assert message is not grpc.aio.EOF, "the stream ended"
    return cast(T, message)  # the stubs type read() as "EOF or T" with EOF an object: no narrowing


@overload
def health_check(
    channel: grpc.aio.Channel,
) -> grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]: ...
@overload
def health_check(
    channel: grpc.Channel,
) -> grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]: ...
def health_check(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    """grpc.health.v1.Health/Check over `channel`."""
    return health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]  # the stubs declare no methods


def bad_request_fields(err: grpc.RpcError) -> list[str]:
    """The field names of the BadRequest detail of an INVALID_ARGUMENT error."""
    status = status_of(err)
    assert status is not None, "no rich status in the error"
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            fields += [v.field for v in br.field_violations]
    return fields


def detail_of(err: grpc.aio.AioRpcError, message_type: Any) -> Any:
    status = status_of(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            out = message_type()
            detail.Unpack(out)
            return out
    raise AssertionError(f"no {message_type.DESCRIPTOR.name} detail")


def quota_info(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """The metadata of a tenant quota's refusal (ErrorInfo QUOTA_EXCEEDED): tenant, resource,
    used, limit and the option that sets it."""
    info = detail_of(err, error_details_pb2.ErrorInfo)
    assert info.reason == "QUOTA_EXCEEDED" and info.domain == "tke.cloud", info
    return dict(info.metadata)
