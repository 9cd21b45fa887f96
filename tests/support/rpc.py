"""Assertions on gRPC errors: code and google.rpc details."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
        assert "Traceback" not in (err.details() or "")
        return err
    raise AssertionError(f"expected {code.name}, the call succeeded")


def bad_request_fields(err: grpc.RpcError) -> list[str]:
    """The field names of the BadRequest detail of an INVALID_ARGUMENT error."""
    status = rpc_status.from_call(err)
    assert status is not None, "no rich status in the error"
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            fields += [v.field for v in br.field_violations]
    return fields


def detail_of(err: grpc.aio.AioRpcError, message_type: Any) -> Any:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            out = message_type()
            detail.Unpack(out)
            return out
    raise AssertionError(f"no {message_type.DESCRIPTOR.name} detail")
