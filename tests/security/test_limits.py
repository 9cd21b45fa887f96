"""Security model: what one caller can make the apiserver hold, probed as an attacker would.

- An object over limits.max_object_bytes is refused with INVALID_ARGUMENT naming the field
  that makes it big, before anything reaches etcd (never INTERNAL "request is too large");
  etcd's own refusal, when the apiserver lets more through, is INVALID_ARGUMENT too.
- A request over limits.max_request_bytes is grpc's RESOURCE_EXHAUSTED, cleanly; ipamd takes the
  same 4 MiB.
- Unary calls in flight are capped (limits.max_requests_inflight): the next one is refused at
  once with RESOURCE_EXHAUSTED and a RetryInfo, health checks still answer. A call counts until
  its response is delivered, so a client that never reads holds at most that many responses.
- tke-ipamd caps the unary calls in flight on each listener (max_requests_inflight) the same
  way, before authentication; a flood on TCP leaves the node's unix socket its own share, and
  tke-ipamc takes the refusal for "try again later" (code 11), not an exhausted pool.
- Watches per identity are capped (limits.max_watches_per_identity): the next is refused with
  RESOURCE_EXHAUSTED and a RetryInfo; other identities are not affected; closing one frees it.
- A tenant's watches, every user of it together, are capped (limits.max_watches_per_tenant), and
  all tenants' (limits.max_watches_of_tenants), so that a tenant's many users cannot hold every
  stream the server takes: the rest goes to other tenants and to platform administrators.
- Catch-ups from etcd's history (a watch resumed from before the replay window: an etcd watch
  each, whose unsent history etcd keeps in memory) are capped per identity
  (limits.max_catchups_per_identity) and for the process (limits.max_catchups): the next is
  refused with RESOURCE_EXHAUSTED and a RetryInfo before an etcd watch is opened; a catch-up
  gives its place back once it reaches the window, when its stream ends, or when its client
  takes no change for watch.catchup_stall seconds (its watch then ends with where to resume).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.cni import Runtime, console_script
from tests.support.etcd import EtcdProcess
from tests.support.ipamd_daemon import IpamdDaemon, IpamdProcess
from tests.support.ports import free_port
from tests.support.rpc import bad_request_fields, detail_of, expect_error, health_check, next_message
from tests.support.unread_calls import UnreadCalls
from tests.support.waiting import wait_for
from tke.internal.apiserver.app import LimitsConfig, WatchConfig
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.rpc.inflight import HEALTH_CHECK, HEALTH_WATCH
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

Code = grpc.StatusCode
SERVICE = "tke.platform.v1.ClusterService"
MiB = 1024 * 1024


@pytest.fixture
async def api(etcd_config: EtcdConfig) -> AsyncIterator[Running]:
    running = await start(local_config(etcd_config))
    try:
        yield running
    finally:
        await stop(running)


async def create_refused(api: Running, c: cluster_pb2.Cluster) -> list[str]:
    """Create `c`, expect INVALID_ARGUMENT, check nothing was stored; the fields named."""
    err = await expect_error(api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c)), Code.INVALID_ARGUMENT)
    assert "at most 1024 KiB" in (err.details() or ""), err.details()
    await expect_error(api.clusters.Get(cluster_pb2.GetClusterRequest(name=c.metadata.name)), Code.NOT_FOUND)
    return bad_request_fields(err)


async def test_an_object_over_the_size_limit_names_the_field_that_makes_it_big(api: Running) -> None:
    many_labels = cluster("many-labels")
    many_labels.metadata.labels.update({f"key-{i:05d}": "v" * 63 for i in range(20_000)})  # each valid, 2.5 MiB
    assert await create_refused(api, many_labels) == ["cluster.metadata.labels"]

    # Extra args no longer make an object big: one component's are at most 16 KiB
    # (validation.MAX_COMPONENT_ARGS_BYTES), refused before the size is measured.
    long_args = cluster("long-args")
    long_args.spec.extra_args["kubelet"].args.update({f"flag-{i}": "x" * 4000 for i in range(400)})
    err = await expect_error(
        api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=long_args)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.spec.extra_args['kubelet']"]

    one_huge = cluster("one-huge-machine-label")
    machine = one_huge.spec.machines.add(ip="192.0.2.1", credential_ref="ssh-key")
    for i in range(300):
        machine.labels[f"k{i}"] = "v" * 63
    one_huge.spec.machines[0].labels.update({f"big-{i}": "w" * 63 for i in range(30_000)})
    assert await create_refused(api, one_huge) == ["cluster.spec.machines[0].labels"]


async def test_updates_and_status_writes_over_the_limit_change_nothing(api: Running) -> None:
    created = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("grows")))
    bigger = cluster_pb2.Cluster()
    bigger.CopyFrom(created)
    bigger.metadata.labels.update({f"key-{i:05d}": "v" * 63 for i in range(20_000)})
    err = await expect_error(
        api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=bigger)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.metadata.labels"]

    status = cluster_pb2.Cluster()
    status.CopyFrom(created)
    status.status.conditions.add(type="Ready", message="m" * (2 * MiB))
    err = await expect_error(
        api.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=status)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.status.conditions[0].message"]
    now = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="grows"))
    assert now.metadata.resource_version == created.metadata.resource_version


async def test_a_request_over_the_message_limit_is_resource_exhausted(api: Running) -> None:
    c = cluster("too-big-to-read")
    c.metadata.labels.update({f"key-{i:05d}": "v" * 63 for i in range(60_000)})  # 4.4 MiB > 4 MiB
    err = await expect_error(api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c)), Code.RESOURCE_EXHAUSTED)
    assert "larger than max" in (err.details() or "")
    # The server is fine and still answers.
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("after-the-big-one")))


async def test_etcd_refusing_a_request_as_too_large_is_invalid_argument_not_internal(etcd_config: EtcdConfig) -> None:
    """An operator who raised max_object_bytes above etcd's --max-request-bytes (1.5 MiB)."""
    loose = LimitsConfig(max_object_bytes=3 * MiB, max_request_bytes=8 * MiB)
    config = local_config(etcd_config, limits=loose)
    running = await start(replace(config, watch=replace(config.watch, client_queue_bytes=6 * MiB)))
    try:
        c = cluster("over-etcds-limit")
        c.metadata.labels.update({f"key-{i:05d}": "v" * 63 for i in range(25_000)})  # 1.8 MiB
        err = await expect_error(
            running.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c)), Code.INVALID_ARGUMENT
        )
        assert "max-request-bytes" in (err.details() or "")
    finally:
        await stop(running)


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def in_flight(running: Running, calls: list[asyncio.Future[object]]) -> bool:
    """Whether every call is in flight; a call that ended while etcd is paused fails the test
    at once with its outcome (it could not have read etcd)."""
    for call in calls:
        if call.done():
            raise AssertionError(f"a call ended while etcd was paused: {call.exception() or call.result()!r}")
    return running.apiserver.inflight.inflight == len(calls)


async def test_calls_beyond_the_inflight_limit_are_refused_at_once_with_retry_info(own_etcd: EtcdProcess) -> None:
    etcd = EtcdConfig(endpoints=[own_etcd.endpoint], prefix="/inflight", request_timeout=30.0, retry_budget=30.0)
    running = await start(local_config(etcd, limits=LimitsConfig(max_requests_inflight=2)))
    blocked: list[asyncio.Future[object]] = []
    try:
        own_etcd.pause()  # every call that reaches etcd now waits
        get = cluster_pb2.GetClusterRequest(name="anything")
        blocked += [asyncio.ensure_future(running.clusters.Get(get, timeout=60)) for _ in range(2)]
        await wait_for(lambda: in_flight(running, blocked), what="both calls in flight")

        async def refused() -> grpc.aio.AioRpcError | None:
            try:
                await running.clusters.Get(get, timeout=1)
            except grpc.aio.AioRpcError as err:
                return err if err.code() == Code.RESOURCE_EXHAUSTED else None
            return None

        err = await wait_for(refused, what="a call beyond the two in flight refused")
        assert "maximum of 2 requests" in (err.details() or "")
        assert detail_of(err, error_details_pb2.ErrorInfo).reason == "TOO_MANY_REQUESTS"
        assert detail_of(err, error_details_pb2.RetryInfo).retry_delay.seconds >= 1
        health = await health_check(running.channel)(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        own_etcd.resume_if_paused()
        outcomes = await asyncio.gather(*blocked, return_exceptions=True)
        await stop(running)
    # The two admitted calls waited for etcd, however it ended for them (a paused etcd may
    # outlast the retry budget): none was refused for the limit.
    for outcome in outcomes:
        assert isinstance(outcome, grpc.aio.AioRpcError), outcome
        assert outcome.code() in (Code.NOT_FOUND, Code.UNAVAILABLE), outcome.details()


async def test_responses_a_client_never_reads_stay_in_flight(etcd_config: EtcdConfig) -> None:
    """Answers a client does not take stay in the server's memory: they count against the limit
    until delivered, or one client sending calls it never reads grows the server without bound
    (500 unread 2 MiB List pages held 1.9 GB; 1000 unread reflection streams 156 MB)."""
    running = await start(local_config(etcd_config, limits=LimitsConfig(max_requests_inflight=2)))
    unread: UnreadCalls | None = None
    get = cluster_pb2.GetClusterRequest(name="prod")
    try:
        await running.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("prod")))
        unread = await UnreadCalls.connect("127.0.0.1", running.port)
        # One unary call and one reflection stream (streams of descriptors count too).
        streams = {
            await unread.send("/tke.platform.v1.ClusterService/Get", get.SerializeToString()),
            await unread.send(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE).SerializeToString(),
            ),
        }
        await unread.wait_answered(streams)  # both handlers have returned; their answers wait
        err = await expect_error(running.clusters.Get(get, timeout=5), Code.RESOURCE_EXHAUSTED)
        assert detail_of(err, error_details_pb2.ErrorInfo).reason == "TOO_MANY_REQUESTS"
        await unread.close()  # the answers are dropped with the connection
        unread = None
        await wait_for(lambda: running.apiserver.inflight.inflight == 0, what="the unread calls released")
        assert (await running.clusters.Get(get, timeout=5)).metadata.name == "prod"
    finally:
        if unread is not None:
            await unread.close()
        await stop(running)


WatchCall = grpc.aio.UnaryStreamCall[cluster_pb2.WatchClustersRequest, cluster_pb2.ClusterEvent]
TOKENS = "alice-t,alice,u1,dev,team-a\nbob-t,bob,u2,dev,team-b\n"


async def test_watches_beyond_the_per_identity_cap_are_refused(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(TOKENS)
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})],
        authorizers=[PluginConfig("allow-all")],
    )
    running = await start(local_config(etcd_config, auth=auth, limits=LimitsConfig(max_watches_per_identity=3)))
    try:
        alice, _ = running.channel_with("alice-t")
        bob, _ = running.channel_with("bob-t")

        async def established(stub: cluster_pb2_grpc.ClusterServiceAsyncStub) -> WatchCall:
            call = stub.Watch(cluster_pb2.WatchClustersRequest())
            assert (await next_message(call)).type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK
            return call

        held = [await established(alice) for _ in range(3)]
        extra = alice.Watch(cluster_pb2.WatchClustersRequest())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await extra.read()
        assert info.value.code() == Code.RESOURCE_EXHAUSTED
        assert "3 watches open" in (info.value.details() or "")
        assert detail_of(info.value, error_details_pb2.RetryInfo).retry_delay.seconds >= 1
        assert detail_of(info.value, error_details_pb2.ErrorInfo).reason == "TOO_MANY_WATCHES"
        others = await established(bob)  # another identity has its own allowance
        others.cancel()

        held.pop().cancel()

        async def admitted_again() -> bool:
            call = alice.Watch(cluster_pb2.WatchClustersRequest())
            try:
                first = await next_message(call)
            except grpc.aio.AioRpcError as err:
                assert err.code() == Code.RESOURCE_EXHAUSTED
                return False
            held.append(call)
            return bool(first.type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK)

        await wait_for(admitted_again, what="a watch admitted after one was closed")
        for call in held:
            call.cancel()
    finally:
        await stop(running)


WATCH_TOKENS = (
    "a1-t,a1,u1,dev,team-a\na2-t,a2,u2,dev,team-a\na3-t,a3,u3,dev,team-a\n"
    "b1-t,b1,u4,dev,team-b\nc1-t,c1,u5,dev,team-c\nadmin-t,admin,u6,tke:platform-admins,default\n"
)


async def test_a_tenants_users_together_and_all_tenants_together_hold_capped_watches(
    etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(WATCH_TOKENS)
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})],
        authorizers=[PluginConfig("allow-all")],
    )
    # Each user may hold 2, a tenant 3, tenants together 4 (of the streams max_streams leaves).
    limits = LimitsConfig(max_watches_per_identity=2, max_watches_per_tenant=3, max_watches_of_tenants=4)
    running = await start(local_config(etcd_config, auth=auth, limits=limits))
    held: list[WatchCall] = []
    try:
        stubs = {user: running.channel_with(f"{user}-t")[0] for user in ("a1", "a2", "a3", "b1", "c1", "admin")}

        async def established(user: str) -> None:
            call = stubs[user].Watch(cluster_pb2.WatchClustersRequest())
            held.append(call)
            assert (await next_message(call)).type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK

        async def refused(user: str) -> dict[str, str]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stubs[user].Watch(cluster_pb2.WatchClustersRequest()).read()
            assert info.value.code() == Code.RESOURCE_EXHAUSTED, info.value.details()
            assert detail_of(info.value, error_details_pb2.RetryInfo).retry_delay.seconds >= 1
            error = detail_of(info.value, error_details_pb2.ErrorInfo)
            assert error.reason == "TOO_MANY_WATCHES"
            return dict(error.metadata) | {"message": info.value.details() or ""}

        for user in ("a1", "a1", "a2"):  # team-a's 3, from two users
            await established(user)
        tenant = await refused("a3")  # a user holding none, of a tenant holding its share
        assert tenant["scope"] == "tenant" and tenant["limit"] == "3", tenant
        assert "tenant 'team-a' has 3 watches open" in tenant["message"]
        assert "limits.max_watches_per_tenant" in tenant["message"]
        await established("b1")  # another tenant: the fourth of tenants together
        everyone = await refused("c1")
        assert everyone["scope"] == "tenants" and everyone["limit"] == "4", everyone
        await established("admin")  # platform administrators' watches are not tenants'
        await established("admin")
        assert (await refused("admin"))["scope"] == "user"  # their own identity's allowance holds

        held.pop(0).cancel()  # one of team-a's goes: a place for a tenant again
        await wait_for(lambda: running.apiserver.watch_quota.of_tenant.total() == 3, what="team-a's watch let go")
        await established("c1")
    finally:
        for call in held:
            call.cancel()
        await stop(running)


def test_watch_caps_larger_than_what_they_share_are_configuration_errors() -> None:
    with pytest.raises(
        ValueError, match=r"max_watches_per_tenant \(50\) must be at most max_watches_of_tenants \(40\)"
    ):
        LimitsConfig(max_watches_per_tenant=50, max_watches_of_tenants=40)
    with pytest.raises(ValueError, match=r"max_watches_of_tenants \(7601\) must be at most the 7600 streams"):
        LimitsConfig(max_watches_of_tenants=7601)
    defaults = LimitsConfig()
    assert (defaults.watches_per_tenant, defaults.watches_of_tenants) == (1000, 6840)
    # A configuration that sets only max_streams stays valid: the tenants' caps follow it.
    small = LimitsConfig(max_streams=3000)
    assert (small.watches_per_tenant, small.watches_of_tenants) == (540, 540)


# Three users of one tenant: they watch the same history.
CATCHUP_TOKENS = "alice-t,alice,u1,dev,team-a\nbob-t,bob,u2,dev,team-a\ncarol-t,carol,u3,dev,team-a\n"
HISTORY = 120  # changes of a 250 KB object: 30 MB, more than a stream's flow-control windows and socket buffers


async def catchup_server(
    etcd_config: EtcdConfig, tmp_path: Path, limits: LimitsConfig, catchup_stall: float = 600.0
) -> tuple[Running, str]:
    """An apiserver with a replay window of 3 changes, and a resource_version HISTORY changes
    before it: a watch from there catches up from etcd, and one whose client does not read
    stays in its catch-up (its messages fill the stream's windows)."""
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(CATCHUP_TOKENS)
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})],
        authorizers=[PluginConfig("allow-all")],
    )
    watch = WatchConfig(window=3, bookmark_interval=60, progress_interval=0.2, catchup_stall=catchup_stall)
    running = await start(local_config(etcd_config, auth=auth, limits=limits, watch=watch))
    try:
        writer, _ = running.channel_with("alice-t")
        big = cluster("big")
        big.metadata.annotations["blob"] = "a" * 250_000
        created = await writer.Create(cluster_pb2.CreateClusterRequest(cluster=big))
        for i in range(HISTORY):
            big.metadata.annotations["blob"] = chr(ord("b") + i % 20) * 250_000
            big.metadata.resource_version = ""
            await writer.Update(cluster_pb2.UpdateClusterRequest(cluster=big))
        assert not running.apiserver.cluster_hub.covers(int(created.metadata.resource_version))
    except BaseException:
        await stop(running)
        raise
    return running, created.metadata.resource_version


async def catching_up(stub: cluster_pb2_grpc.ClusterServiceAsyncStub, rv: str) -> WatchCall | None:
    """A watch from `rv` whose catch-up has started (its first change arrived; the caller then
    reads on or leaves it unread), or None when it was refused for the catch-up limits."""
    call = stub.Watch(cluster_pb2.WatchClustersRequest(resource_version=rv))
    try:
        first = await next_message(call)
    except grpc.aio.AioRpcError as err:
        assert err.code() == Code.RESOURCE_EXHAUSTED, err.details()
        assert detail_of(err, error_details_pb2.ErrorInfo).reason == "TOO_MANY_CATCHUPS"
        return None
    assert first.type == meta_pb2.WATCH_EVENT_TYPE_MODIFIED
    return call


async def refused_catchup(stub: cluster_pb2_grpc.ClusterServiceAsyncStub, rv: str) -> str:
    """Watch from `rv`, expect the catch-up limits' refusal; its message."""
    call = stub.Watch(cluster_pb2.WatchClustersRequest(resource_version=rv))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    err = info.value
    assert err.code() == Code.RESOURCE_EXHAUSTED, err.details()
    assert detail_of(err, error_details_pb2.RetryInfo).retry_delay.seconds >= 1
    assert detail_of(err, error_details_pb2.ErrorInfo).reason == "TOO_MANY_CATCHUPS"
    message = err.details() or ""
    assert "retry later, or list again and watch from the list's resource_version" in message
    return message


async def test_catch_ups_beyond_the_per_identity_cap_are_refused(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    limits = LimitsConfig(max_catchups_per_identity=2, max_catchups=32)
    running, rv = await catchup_server(etcd_config, tmp_path, limits)
    held: list[WatchCall] = []
    try:
        alice, _ = running.channel_with("alice-t")
        bob, _ = running.channel_with("bob-t")
        for _ in range(2):
            call = await catching_up(alice, rv)
            assert call is not None
            held.append(call)
        # Both stay in their catch-up: their clients read nothing more.
        assert "user 'alice' has 2 watches catching up" in await refused_catchup(alice, rv)
        # A watch that needs no catch-up is not counted, nor is another identity's catch-up.
        live = alice.Watch(cluster_pb2.WatchClustersRequest())
        assert (await next_message(live)).type == meta_pb2.WATCH_EVENT_TYPE_ADDED  # the initial state
        assert (await next_message(live)).type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK
        live.cancel()
        others = await catching_up(bob, rv)
        assert others is not None
        held.append(others)

        # A catch-up that reaches the window gives its place back, though its watch goes on.
        reader = held[1]
        for _ in range(HISTORY - 1):
            assert (await next_message(reader)).type == meta_pb2.WATCH_EVENT_TYPE_MODIFIED
        third = await wait_for(lambda: catching_up(alice, rv), what="a catch-up admitted after one reached the window")
        held.append(third)
        assert "user 'alice' has 2" in await refused_catchup(alice, rv)
        assert running.apiserver.cluster_hub.subscribers >= 1  # the reader's watch, now served from memory

        # A catch-up whose stream ends gives its place back too.
        held[0].cancel()
        fourth = await wait_for(lambda: catching_up(alice, rv), what="a catch-up admitted after one was cancelled")
        held.append(fourth)
    finally:
        for call in held:
            call.cancel()
        await stop(running)


async def test_catch_ups_beyond_the_process_cap_are_refused(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    limits = LimitsConfig(max_catchups_per_identity=2, max_catchups=2)
    running, rv = await catchup_server(etcd_config, tmp_path, limits)
    held: list[WatchCall] = []
    try:
        alice, _ = running.channel_with("alice-t")
        bob, _ = running.channel_with("bob-t")
        carol, _ = running.channel_with("carol-t")
        for stub in (alice, bob):
            call = await catching_up(stub, rv)
            assert call is not None
            held.append(call)
        # Carol has run none, but the server runs its 2.
        assert "the server runs 2 watches catching up" in await refused_catchup(carol, rv)
        assert running.apiserver.catchup_quota.count == 2
        held.pop().cancel()
        admitted = await wait_for(lambda: catching_up(carol, rv), what="a catch-up admitted after one ended")
        held.append(admitted)
    finally:
        for call in held:
            call.cancel()
        await stop(running)


async def test_a_catch_up_whose_client_stops_reading_ends_and_gives_its_place_back(
    etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    limits = LimitsConfig(max_catchups_per_identity=1, max_catchups=32)
    running, rv = await catchup_server(etcd_config, tmp_path, limits, catchup_stall=1.0)
    held: list[WatchCall] = []
    try:
        alice, _ = running.channel_with("alice-t")
        stalled = await catching_up(alice, rv)
        assert stalled is not None
        held.append(stalled)
        # Its client reads nothing more: the catch-up ends by itself, and another one is admitted.
        again = await wait_for(lambda: catching_up(alice, rv), what="a catch-up admitted after one stalled")
        held.append(again)
        # The stalled client, reading at last, gets what was sent, then where to resume.
        received = 1
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while True:
                assert (await next_message(stalled)).type == meta_pb2.WATCH_EVENT_TYPE_MODIFIED
                received += 1
        assert info.value.code() == Code.RESOURCE_EXHAUSTED, info.value.details()
        assert detail_of(info.value, error_details_pb2.ErrorInfo).reason == "WATCH_TOO_SLOW"
        assert "watch again from resource_version" in (info.value.details() or "")
        assert received < HISTORY
    finally:
        for call in held:
            call.cancel()
        await stop(running)


async def test_ipamd_takes_requests_up_to_the_same_limit(etcd_config: EtcdConfig) -> None:
    with IpamdDaemon(etcd_config.endpoints, etcd_config.prefix) as ipamd:
        async with grpc.aio.insecure_channel(ipamd.target) as channel:
            stub: ipam_pb2_grpc.IPAMServiceAsyncStub = ipam_pb2_grpc.IPAMServiceStub(channel)
            attachments = [
                ipam_pb2.Attachment(container_id=f"c{i:06d}" + "x" * 64, ifname="eth0") for i in range(60_000)
            ]
            err = await expect_error(
                stub.GarbageCollect(ipam_pb2.GarbageCollectRequest(node="n1", valid_attachments=attachments)),
                Code.RESOURCE_EXHAUSTED,
            )
            assert "larger than max" in (err.details() or "")
            await stub.ListPools(ipam_pb2.ListPoolsRequest())  # and it goes on


async def test_ipamd_refuses_calls_beyond_its_inflight_cap_per_listener(own_etcd: EtcdProcess, tmp_path: Path) -> None:
    tcp = f"127.0.0.1:{free_port()}"
    ipamd = IpamdProcess(
        tmp_path, endpoints=[own_etcd.endpoint], prefix="/inflight", extra="max_requests_inflight = 2", tcp=tcp
    )
    ipamd.start()
    held: list[asyncio.Future[ipam_pb2.ListPoolsResponse]] = []
    listing = ipam_pb2.ListPoolsRequest()

    async def refused(stub: ipam_pb2_grpc.IPAMServiceAsyncStub) -> grpc.aio.AioRpcError | None:
        """A call that ipamd refuses at once; one it admits stays in flight (etcd is paused)."""
        call = asyncio.ensure_future(stub.ListPools(listing, timeout=60))
        held.append(call)
        done, _ = await asyncio.wait([call], timeout=1)
        err = call.exception() if done else None
        return err if isinstance(err, grpc.aio.AioRpcError) and err.code() == Code.RESOURCE_EXHAUSTED else None

    try:
        async with grpc.aio.insecure_channel(tcp) as remote, grpc.aio.insecure_channel(ipamd.target) as local:
            flood: ipam_pb2_grpc.IPAMServiceAsyncStub = ipam_pb2_grpc.IPAMServiceStub(remote)
            node: ipam_pb2_grpc.IPAMServiceAsyncStub = ipam_pb2_grpc.IPAMServiceStub(local)
            await node.ListPools(listing, timeout=30)  # ipamd is connected to etcd
            own_etcd.pause()  # every call that reaches etcd now waits

            err = await wait_for(lambda: refused(flood), what="a TCP call beyond the two in flight refused")
            assert "maximum of 2 requests" in (err.details() or "")
            assert detail_of(err, error_details_pb2.ErrorInfo).reason == "TOO_MANY_REQUESTS"
            assert detail_of(err, error_details_pb2.RetryInfo).retry_delay.seconds >= 1
            health = await health_check(remote)(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            # The node's socket has its own share: its call is admitted (and waits for etcd).
            assert await refused(node) is None

            # With the socket at its cap, tke-ipamc says "try again later", not "pool exhausted".
            ipamc = Runtime(binary=console_script("tke-ipamc"), node="", path=["/nonexistent"])
            conf = {
                "cniVersion": "1.0.0",
                "name": "inflight",
                "type": "tke-ipamc",
                "ipam": {"ipamd": {"address": ipamd.socket, "timeout": 1}, "node": "n1", "stateDir": str(tmp_path)},
            }

            async def ipamc_refused() -> dict[str, object] | None:
                await refused(node)  # keeps the socket at its cap
                out = ipamc.run("ADD", conf, container_id="c1", netns="/proc/self/ns/net", args="K8S_POD_NAME=p")
                answer: dict[str, object] = out.json
                return answer if "maximum of 2 requests" in str(answer.get("details")) else None

            answer = await wait_for(ipamc_refused, what="tke-ipamc refused for the cap")
            assert answer["code"] == 11, answer
    finally:
        own_etcd.resume_if_paused()
        await asyncio.gather(*held, return_exceptions=True)
        ipamd.stop()


async def test_health_watches_beyond_the_cap_are_refused_and_checks_still_answered(etcd_config: EtcdConfig) -> None:
    """Health/Watch is open to anyone and each stream stays as long as its client likes: without
    a cap, 10,000 of them grew the apiserver by 132 MB."""
    running = await start(local_config(etcd_config, limits=LimitsConfig(max_health_watches=3)))
    watch = running.channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    held = []
    try:
        for _ in range(3):
            call = watch(health_pb2.HealthCheckRequest())
            assert (await next_message(call)).status == health_pb2.HealthCheckResponse.SERVING
            held.append(call)
        err = await expect_error(next_message(watch(health_pb2.HealthCheckRequest())), Code.RESOURCE_EXHAUSTED)
        assert "maximum of 3 health watches" in (err.details() or "")
        assert detail_of(err, error_details_pb2.ErrorInfo).reason == "TOO_MANY_HEALTH_WATCHES"
        health = await health_check(running.channel)(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # A watch that ends gives its place back.
        held.pop().cancel()
        watches = running.apiserver.inflight.health[HEALTH_WATCH]
        await wait_for(lambda: watches.held == 2, what="the place given back")
        call = watch(health_pb2.HealthCheckRequest())
        assert (await next_message(call)).status == health_pb2.HealthCheckResponse.SERVING
        held.append(call)
    finally:
        for call in held:
            call.cancel()
        await stop(running)


async def test_health_checks_whose_answers_are_not_read_are_capped(etcd_config: EtcdConfig) -> None:
    """Health/Check is open to anyone: 20,000 checks whose answers a client never read grew the
    apiserver by 185 MB. They count until delivered, and past the cap the next is refused."""
    running = await start(local_config(etcd_config, limits=LimitsConfig(max_health_checks=3)))
    checks = running.apiserver.inflight.health[HEALTH_CHECK]
    unread: UnreadCalls | None = None
    try:
        unread = await UnreadCalls.connect("127.0.0.1", running.port)
        request = health_pb2.HealthCheckRequest().SerializeToString()
        streams = {await unread.send(HEALTH_CHECK, request) for _ in range(3)}
        await unread.wait_answered(streams)
        err = await expect_error(
            health_check(running.channel)(health_pb2.HealthCheckRequest(), timeout=5), Code.RESOURCE_EXHAUSTED
        )
        assert "maximum of 3 health checks whose answers are not yet read" in (err.details() or "")
        assert detail_of(err, error_details_pb2.ErrorInfo).reason == "TOO_MANY_HEALTH_CHECKS"
        await unread.deliver(min(streams))  # one answer read: its place comes back
        await wait_for(lambda: checks.held == 2, what="the delivered check's place given back")
        health = await health_check(running.channel)(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        await unread.close()
        unread = None
        await wait_for(lambda: checks.held == 0, what="the unread checks released with their connection")
    finally:
        if unread is not None:
            await unread.close()
        await stop(running)
