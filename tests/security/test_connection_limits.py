"""What a caller can hold before it is authenticated: connections and streams
(tke.internal.rpc.connections), probed with a raw HTTP/2 client and raw sockets.

- Calls that send their headers and never their request are below every in-flight limit (those
  count a call once its request has arrived): without a cap, 10,000 of them grew a server by
  206 MiB. `limits.max_streams` caps the calls in progress of every kind: beyond it, grpc refuses
  at once with RESOURCE_EXHAUSTED, and the places come back when the streams end.
- `limits.max_streams_per_connection` is the SETTINGS_MAX_CONCURRENT_STREAMS each connection is
  given: the streams one connection opens beyond it are refused by grpc with RST_STREAM
  REFUSED_STREAM (what bounds HTTP/2 rapid reset, CVE-2023-44487: without it a client that
  opened and reset streams in a loop took 140% CPU and another tenant's Get went from 2 ms to
  358 ms, 15 of 18 failing), while a grpc client queues its calls beyond it and loses none.
- `limits.max_connections` caps each listener's connections (a TCP flood leaves the unix socket
  its own), and is fitted below the process's open-file limit.
- A connection that never finishes its handshake is closed after `limits.handshake_timeout`;
  one without calls after `limits.connection_idle_timeout`, and its client reconnects unharmed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.support.apiserver import local_config, start, stop
from tests.support.ipamd_daemon import IpamdProcess
from tests.support.ports import free_port
from tests.support.rpc import expect_error, health_check
from tests.support.unread_calls import MAX_CONCURRENT_STREAMS, REFUSED_STREAM, UnreadCalls
from tests.support.waiting import wait_for
from tke.internal.apiserver.app import LimitsConfig
from tke.internal.ipamd.config import IpamdConfig
from tke.internal.rpc.connections import DEFAULT_CONNECTIONS, RESERVED_FILES, ConnectionLimits
from tke.internal.rpc.server import ListenConfig
from tke.internal.storage.etcd import EtcdConfig

Code = grpc.StatusCode
GET = "/tke.platform.v1.ClusterService/Get"
CHECK = health_pb2.HealthCheckRequest()
# The smallest limits that still contain the others: 4 calls in flight, 2 health watches and 2
# unread health checks; one more stream than those.
SMALL = {"max_requests_inflight": 4, "max_health_watches": 2, "max_health_checks": 2}


async def answers(channel: grpc.aio.Channel) -> Code:
    """The status of one health check over `channel`."""
    try:
        await health_check(channel)(CHECK, timeout=5)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return Code.OK


async def test_calls_that_never_send_their_request_are_capped(etcd_config: EtcdConfig) -> None:
    running = await start(local_config(etcd_config, limits=LimitsConfig(**SMALL, max_streams=9)))
    silent = await UnreadCalls.connect("127.0.0.1", running.port)
    try:
        # More than the cap: whatever order the server takes them and the checks below in, 9 of
        # them end up held (a check that comes first takes a place for its moment, and the
        # silent stream refused meanwhile is made up for by the next).
        opened = {await silent.start(GET) for _ in range(12)}
        err = await wait_for(lambda: _refused(running.channel), what="a call refused while 9 silent streams are held")
        assert "Concurrent RPC limit exceeded" in (err.details() or "")
        await wait_for(lambda: len(opened - silent.ended) <= 9, what="the silent streams beyond the cap refused")
        await silent.close()  # the streams end with their connection: their places come back
        assert await wait_for(lambda: _admitted(running.channel), what="calls admitted again")
    finally:
        await silent.close()
        await stop(running)


async def test_one_connection_opens_at_most_its_streams(etcd_config: EtcdConfig) -> None:
    running = await start(local_config(etcd_config, limits=LimitsConfig(max_streams_per_connection=3)))
    silent = await UnreadCalls.connect("127.0.0.1", running.port)
    try:
        assert (await silent.wait_settings()).get(MAX_CONCURRENT_STREAMS) == 3
        opened = [await silent.start(GET) for _ in range(5)]
        await wait_for(lambda: len(silent.reset) >= 2, what="the streams beyond the connection's 3 refused")
        assert silent.reset == dict.fromkeys(opened[3:], REFUSED_STREAM)
        # Other connections have their own streams. Two at once, not more: the server counts a
        # finished stream until grpc has freed it, so a client at the cap (here the call before
        # and three more) may be refused with REFUSED_STREAM (the documented trade, security.md).
        assert await answers(running.channel) == Code.OK
        checks = [health_check(running.channel)(CHECK, timeout=30) for _ in range(2)]
        assert all(answer.status == health_pb2.HealthCheckResponse.SERVING for answer in await asyncio.gather(*checks))
    finally:
        await silent.close()
        await stop(running)


async def _refused(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError | None:
    try:
        await health_check(channel)(CHECK, timeout=5)
    except grpc.aio.AioRpcError as err:
        if err.code() == Code.RESOURCE_EXHAUSTED:
            return err
        raise
    return None


async def _admitted(channel: grpc.aio.Channel) -> bool:
    return await answers(channel) == Code.OK


async def test_connections_beyond_the_cap_are_closed_and_the_unix_socket_keeps_its_own(
    etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    unix = tmp_path / "run" / "apiserver.sock"
    config = local_config(
        etcd_config,
        listen=ListenConfig(address="127.0.0.1:0", unix_socket=str(unix)),
        limits=LimitsConfig(max_connections=3),
    )
    running = await start(config)
    held = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(3)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as tcp:
            await expect_error(health_check(tcp)(CHECK, timeout=3), Code.UNAVAILABLE)
        async with grpc.aio.insecure_channel(f"unix:{unix}") as local:
            assert await answers(local) == Code.OK
        for held_socket in held:
            held_socket.close()

        async def tcp_answers() -> bool:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as tcp:
                return await answers(tcp) == Code.OK

        assert await wait_for(tcp_answers, what="a TCP connection taken once the others are closed")
    finally:
        for held_socket in held:
            held_socket.close()
        await stop(running)


async def test_a_connection_that_never_finishes_its_handshake_is_closed(etcd_config: EtcdConfig) -> None:
    running = await start(local_config(etcd_config, limits=LimitsConfig(handshake_timeout=0.3)))
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    try:
        # The server's SETTINGS, then a GOAWAY, then the end of the stream: read to the end.
        said = await asyncio.wait_for(reader.read(), timeout=30)
        assert b"handshake" in said, said
    finally:
        writer.close()
        await stop(running)


async def test_an_idle_connection_is_closed_and_its_client_reconnects(etcd_config: EtcdConfig) -> None:
    running = await start(local_config(etcd_config, limits=LimitsConfig(connection_idle_timeout=0.3)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            assert await answers(channel) == Code.OK
            assert channel.get_state() == grpc.ChannelConnectivity.READY

            async def idle() -> bool:
                return channel.get_state() == grpc.ChannelConnectivity.IDLE

            assert await wait_for(idle, what="the server closing the idle connection")
            assert await answers(channel) == Code.OK  # the next call reconnects, without an error
    finally:
        await stop(running)


def test_connections_fit_below_the_open_file_limit(caplog: pytest.LogCaptureFixture) -> None:
    fit = (1024 - RESERVED_FILES) // 2
    configured = ConnectionLimits(max_connections=10_000)
    with caplog.at_level(logging.WARNING, logger="tke.internal.rpc.connections"):
        assert configured.fitted(open_files=1024).max_connections == fit
    assert "does not fit the open-file limit 1024" in caplog.text
    assert configured.fitted(open_files=65536) is configured
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tke.internal.rpc.connections"):
        assert ConnectionLimits().fitted(open_files=1024).max_connections == fit  # unset: fitted quietly
        assert ConnectionLimits().fitted(open_files=65536).max_connections == DEFAULT_CONNECTIONS
    assert not caplog.text


def test_the_stream_cap_must_contain_the_other_limits() -> None:
    with pytest.raises(ValueError, match=r"max_streams \(2400\) must be more than max_requests_inflight"):
        LimitsConfig(max_streams=2400)
    with pytest.raises(ValueError, match=r"max_streams \(500\) must be more than max_requests_inflight"):
        IpamdConfig(max_streams=500)
    with pytest.raises(ValueError, match="handshake_timeout must be more than 0"):
        LimitsConfig(handshake_timeout=0)
    with pytest.raises(ValueError, match="max_streams_per_connection must be at least 1"):
        IpamdConfig(max_streams_per_connection=0)


async def test_ipamd_caps_connections_per_listener(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    tcp = f"127.0.0.1:{free_port()}"
    ipamd = IpamdProcess(
        tmp_path, endpoints=etcd_config.endpoints, prefix="/conns", extra="max_connections = 2", tcp=tcp
    )
    ipamd.start()
    host, port = tcp.rsplit(":", 1)
    held = [socket.create_connection((host, int(port))) for _ in range(2)]
    try:
        async with grpc.aio.insecure_channel(tcp) as remote:
            await expect_error(health_check(remote)(CHECK, timeout=3), Code.UNAVAILABLE)
        async with grpc.aio.insecure_channel(ipamd.target) as local:
            assert await answers(local) == Code.OK
    finally:
        for held_socket in held:
            held_socket.close()
        ipamd.stop()


async def test_ipamd_unix_socket_limits_streams_per_connection(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    ipamd = IpamdProcess(
        tmp_path, endpoints=etcd_config.endpoints, prefix="/streams", extra="max_streams_per_connection = 2"
    )
    ipamd.start()
    silent = await UnreadCalls.connect_unix(ipamd.target.removeprefix("unix:"))
    try:
        assert (await silent.wait_settings()).get(MAX_CONCURRENT_STREAMS) == 2
        opened = [await silent.start("/grpc.health.v1.Health/Check") for _ in range(3)]
        await wait_for(lambda: bool(silent.reset), what="the stream beyond the connection's 2 refused")
        assert silent.reset == {opened[2]: REFUSED_STREAM}
    finally:
        await silent.close()
        ipamd.stop()
