"""The etcd connection's keepalive against etcd's ping policy (a real etcd, real pings).

etcd (grpc-go) allows a client's HTTP/2 pings only while the connection has a stream open, and
no more often than `--grpc-keepalive-min-time`; every other ping is a strike, and after the third
strike (strikes are forgiven only when etcd sends something) it closes the connection with
GOAWAY ENHANCE_YOUR_CALM "too_many_pings". The tests keep a connection idle (one call, then
nothing) while it pings, and wait until every connection to etcd has sent twice as many pings as
etcd tolerates, on the same socket: a GOAWAY would close it (and a reconnect replace it).
They run etcd with a 1 s minimum and ping every 1.5 s to be quick; the rule is the same at
etcd's default 5 s and our default 10 s. Channelz shows the sockets and their ping counts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aetcd import rpc

from tests.support.channelz import Socket, sockets_of, subchannels_of
from tests.support.etcd import EtcdCluster, EtcdProcess
from tests.support.waiting import wait_for
from tke.internal.storage.etcd import EtcdConfig
from tke.internal.storage.etcd.connection import EtcdConnection, channel_target

ETCD_MIN_TIME = ["--grpc-keepalive-min-time=1s"]
PINGS = 6  # twice the strikes etcd forgives (it sends GOAWAY at the third)


def fast(endpoints: list[str]) -> EtcdConfig:
    return EtcdConfig(
        endpoints=endpoints,
        prefix="/keepalive",
        request_timeout=2.0,
        retry_budget=4.0,
        keepalive_time=1.5,
        keepalive_timeout=1.0,
        server_keepalive_min_time=1.0,
    )


@pytest.fixture
def single(tmp_path: Path) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path / "etcd")
    server.extra_args = ETCD_MIN_TIME
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def members(tmp_path: Path) -> Iterator[EtcdCluster]:
    group = EtcdCluster(tmp_path / "cluster", extra_args=ETCD_MIN_TIME)
    group.start()
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
async def connect() -> AsyncIterator[list[EtcdConnection]]:
    opened: list[EtcdConnection] = []
    try:
        yield opened
    finally:
        for conn in opened:
            await conn.close()


async def idle_connections(config: EtcdConfig, opened: list[EtcdConnection]) -> tuple[EtcdConnection, list[Socket]]:
    """Open a connection, make one call, and return its sockets once there is one per member."""
    conn = EtcdConnection(config)
    opened.append(conn)
    await conn.call(conn.kv.Range, rpc.RangeRequest(key=b"/keepalive/x"), idempotent=True)
    target = channel_target(config.endpoints)

    def one_each() -> list[Socket] | None:
        sockets = sockets_of(target)
        return sockets if len(sockets) == len(config.endpoints) else None

    return conn, await wait_for(one_each, what=f"a connection to each of {config.endpoints}")


async def keeps_pinging(config: EtcdConfig, sockets: list[Socket]) -> None:
    target = channel_target(config.endpoints)
    first = {s.socket_id for s in sockets}

    def enough() -> list[Socket] | None:
        now = sockets_of(target)
        assert {s.socket_id for s in now} == first, (
            f"etcd closed a connection (GOAWAY too_many_pings) that sat idle: sockets {sockets} became {now}"
        )
        return now if all(s.keepalives_sent >= PINGS for s in now) else None

    await wait_for(enough, what=f"{PINGS} keepalive pings on each idle connection")


async def test_an_idle_connection_keeps_pinging_without_a_goaway(
    single: EtcdProcess, connect: list[EtcdConnection]
) -> None:
    config = fast([single.endpoint])
    _, sockets = await idle_connections(config, connect)
    await keeps_pinging(config, sockets)


async def test_idle_connections_to_every_member_keep_pinging_without_a_goaway(
    members: EtcdCluster, connect: list[EtcdConnection]
) -> None:
    config = fast(members.endpoints)
    _, sockets = await idle_connections(config, connect)
    await keeps_pinging(config, sockets)


async def test_a_hung_member_is_dropped_while_the_connection_is_idle(
    members: EtcdCluster, connect: list[EtcdConnection]
) -> None:
    """Keepalive finds a hung member with no call of ours on its way: the next call never
    waits on it. The connection's pings are what finds it, so they must go on while idle."""
    config = fast(members.endpoints)
    conn, _ = await idle_connections(config, connect)
    hung = members.members[0]
    hung.pause()
    try:
        await wait_for(
            lambda: [
                sub
                for sub in subchannels_of(channel_target(config.endpoints))
                if sub.target.endswith(hung.endpoint) and sub.state != "READY"
            ],
            what="the hung member's connection closed by keepalive",
        )
        # The other members still answer, at once: nothing waits for the hung one.
        for _ in range(6):
            await conn.call(conn.kv.Range, rpc.RangeRequest(key=b"/keepalive/x"), idempotent=True)
    finally:
        hung.resume()


def test_a_keepalive_etcd_would_refuse_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="grpc-keepalive-min-time"):
        EtcdConfig(keepalive_time=5.0)
    with pytest.raises(ValueError, match="grpc-keepalive-min-time"):
        EtcdConfig(keepalive_time=2.0, server_keepalive_min_time=2.0)
    with pytest.raises(ValueError, match="keepalive_timeout"):
        EtcdConfig(keepalive_timeout=0.0)
    assert EtcdConfig(keepalive_time=1.5, server_keepalive_min_time=1.0).keepalive_time == 1.5
