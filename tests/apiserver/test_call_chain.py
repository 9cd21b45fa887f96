"""The server's call chain (tke.internal.rpc.interceptors.CallChain): where the request id goes
back to the client, that each method is wrapped once however many calls it serves, and that
every kind of method (unary, server streaming, grpc's write API, request streaming) passes
through the steps, and that the request of a stream, kept while it lasts, is small."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.apiserver import Running, cluster
from tests.support.rpc import detail_of, expect_error, health_check
from tests.support.unread_calls import UnreadCalls
from tests.support.waiting import wait_for
from tke.internal.apiserver.registry import varint
from tke.internal.rpc.interceptors import MAX_STREAM_REQUEST_BYTES, REQUEST_ID_HEADER, Call, Context, Method
from tke.internal.rpc.server import ListenConfig, ServerSpec, start_server
from tke.platform.v1 import cluster_pb2


def _raw(data: bytes) -> bytes:
    return data


def _id_in(metadata: Any) -> str:
    return str(dict(metadata or ()).get(REQUEST_ID_HEADER, ""))


async def test_a_unary_call_returns_its_request_id_in_the_trailers(api: Running) -> None:
    call = api.clusters.Create(
        cluster_pb2.CreateClusterRequest(cluster=cluster("rid")), metadata=[(REQUEST_ID_HEADER, "mine-1")]
    )
    await call
    assert _id_in(await call.trailing_metadata()) == "mine-1"
    assert _id_in(await call.initial_metadata()) == ""  # no header of its own: no extra operation
    fresh = api.clusters.Get(cluster_pb2.GetClusterRequest(name="rid"))
    await fresh
    assert len(_id_in(await fresh.trailing_metadata())) == 32  # a new id when the client sent none


async def test_an_error_keeps_its_details_and_the_request_id(api: Running) -> None:
    call = api.clusters.Get(cluster_pb2.GetClusterRequest(name="absent"), metadata=[(REQUEST_ID_HEADER, "mine-2")])
    err = await expect_error(call, grpc.StatusCode.NOT_FOUND)
    trailers = dict(err.trailing_metadata() or ())
    assert trailers[REQUEST_ID_HEADER] == "mine-2"
    assert "grpc-status-details-bin" in trailers


@pytest.mark.parametrize("method", ["Get", "Watch"])
async def test_a_request_that_does_not_decode_is_refused_through_the_chain_with_details(
    api: Running, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are no request message are INVALID_ARGUMENT with a BadRequest naming the
    request and why, pass the steps like any call (request id, access line), and reach no
    handler."""
    path = f"/tke.platform.v1.ClusterService/{method}"
    metadata = [(REQUEST_ID_HEADER, f"garbage-{method}")]
    with caplog.at_level(logging.INFO, logger="tke.access"):
        if method == "Watch":
            call = api.channel.unary_stream(path, _raw, _raw)(b"\xff\xff\xff", metadata=metadata)
            err = await expect_error(call.read(), grpc.StatusCode.INVALID_ARGUMENT)
        else:
            err = await expect_error(api.channel.unary_unary(path, _raw, _raw)(b"\xff\xff\xff", metadata=metadata),
                                     grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
    assert f"Error parsing message with type 'tke.platform.v1.{method}" in (err.details() or ""), err.details()
    violation = detail_of(err, error_details_pb2.BadRequest).field_violations[0]
    assert violation.field == "request"
    assert violation.description.startswith(f"is not a valid request message for {path}")
    assert _id_in(err.trailing_metadata()) == f"garbage-{method}"
    assert any(f"{path} INVALID_ARGUMENT" in r.getMessage() for r in caplog.records), caplog.text


@pytest.mark.parametrize("service", ["ClusterService", "MachineService", "EventService"])
@pytest.mark.parametrize("method", ["Watch", "WatchBatches"])
async def test_a_request_that_opens_a_stream_is_at_most_64_kib(api: Running, service: str, method: str) -> None:
    """A watch's request is kept for as long as the watch lasts: one of grpc's 4 MiB (a filter,
    unknown fields) is INVALID_ARGUMENT naming the request, before any handler; 64 KiB is far
    more than any watch needs and goes."""
    path = f"/tke.platform.v1.{service}/{method}"
    watch = api.channel.unary_stream(path, _raw, _raw)
    # Field 2 (label_selector) left empty, then an unknown field 99 of `size` bytes.
    for size, admitted in (
        (MAX_STREAM_REQUEST_BYTES - 8, True),
        (MAX_STREAM_REQUEST_BYTES + 1, False),
        (3_900_000, False),
    ):
        request = b"\x9a\x06" + varint(size) + b"x" * size
        call = watch(request)
        try:
            if admitted:
                assert await call.read() is not grpc.aio.EOF
                continue
            err = await expect_error(call.read(), grpc.StatusCode.INVALID_ARGUMENT)
        finally:
            call.cancel()
        violation = detail_of(err, error_details_pb2.BadRequest).field_violations[0]
        assert violation.field == "request"
        assert f"{len(request)} bytes, more than the {MAX_STREAM_REQUEST_BYTES} a request that opens a stream" in (
            violation.description
        ), violation.description


async def test_a_stream_returns_its_request_id_in_its_headers(api: Running) -> None:
    watch = api.clusters.Watch(cluster_pb2.WatchClustersRequest(), metadata=[(REQUEST_ID_HEADER, "mine-3")])
    assert _id_in(await watch.initial_metadata()) == "mine-3"
    watch.cancel()


async def test_health_watch_and_reflection_pass_through_the_chain(api: Running) -> None:
    # Health's Watch writes its responses with grpc's write API; reflection streams its requests.
    health: Any = health_pb2_grpc.HealthStub(api.channel)  # (the stubs declare no methods)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(api.channel)  # type: ignore[arg-type]  # aio works too

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    answers = [a async for a in stub.ServerReflectionInfo(ask())]
    names = {s.name for s in answers[0].list_services_response.service}
    assert "tke.platform.v1.ClusterService" in names


class _Counting:
    """A step that counts the methods it wraps and the calls it sees."""

    def __init__(self) -> None:
        self.wrapped: list[str] = []
        self.calls = 0

    def wrap(self, call: Call, method: Method) -> Call:
        self.wrapped.append(method.name)

        async def counted(request: Any, context: Context) -> Any:
            self.calls += 1
            return await call(request, context)

        return counted


async def test_each_method_is_wrapped_once_however_many_calls() -> None:
    step = _Counting()
    server = await start_server(
        ListenConfig(address="127.0.0.1:0"), ServerSpec(register=lambda s: None, services=[], interceptors=[step])
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            check = health_check(channel)
            for _ in range(5):
                await check(health_pb2.HealthCheckRequest(service=""))
    finally:
        await server.stop(0)
    assert step.calls == 5
    assert step.wrapped == ["/grpc.health.v1.Health/Check"]


async def test_a_client_gone_before_its_response_is_no_error_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """grpc logs an ERROR with a traceback when a response cannot be sent because its call is
    over; any client causes that at will, by hanging up once the server has begun answering."""
    over: list[object] = []

    async def answer(request: bytes, context: Context) -> bytes:
        context.add_done_callback(over.append)  # type: ignore[arg-type]  # (any callable; the stubs name a class)
        return b"an answer"

    handler = grpc.method_handlers_generic_handler("test.Answer", {"Call": grpc.unary_unary_rpc_method_handler(answer)})
    server = await start_server(
        ListenConfig(address="127.0.0.1:0"),
        ServerSpec(register=lambda s: s.add_generic_rpc_handlers((handler,)), services=[]),
    )
    try:
        for _ in range(3):
            client = await UnreadCalls.connect("127.0.0.1", server.port)
            await client.wait_answered({await client.send("/test.Answer/Call", b"")})
            await client.close()  # the answer's headers are out, its message is not
        await wait_for(lambda: len(over) == 3, what="the three calls over")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/test.Answer/Call")
            assert await call(b"", timeout=5) == b"an answer"
    finally:
        await server.stop(0)
    noisy = [r for r in caplog.records if r.name.startswith("grpc") and (r.levelno >= logging.WARNING or r.exc_info)]
    assert not noisy, [r.getMessage() for r in noisy]
