"""Security model: one tenant cannot take the calls in flight of the whole apiserver.

A call holds its place in limits.max_requests_inflight until its response is delivered, so a
client that sends calls and never reads the answers (tests/support/unread_calls.py) holds
places for as long as it likes. Each tenant (every user of it together) holds at most
limits.max_requests_inflight_per_tenant of them, all tenants together at most
limits.max_requests_inflight minus limits.requests_inflight_admin_reserve, and unauthenticated
callers of open methods together one tenant's share:

- one user holding its share of its tenant's (half of it by default): its next call is refused
  (scope=user), the tenant's other users are answered;
- a tenant holding its share with unread calls: its next call, from any of its users, is refused
  (RESOURCE_EXHAUSTED, ErrorInfo TOO_MANY_REQUESTS with scope=tenant, RetryInfo), another
  tenant's calls are answered, and its places come back when its answers are delivered or its
  connection goes;
- tenants holding every place they share: another tenant is refused (scope=tenants), a platform
  administrator (the controller's identity) is answered;
- unauthenticated callers of an open method (reflection) hold one share, not the server;
- a tenant's read answers not yet delivered are at most limits.max_response_bytes_per_tenant:
  beyond, its calls are refused (scope=tenant_bytes), though a tenant holding none gets one
  answer however big, and small answers still go while big ones would not fit;
- its watches' messages not yet delivered count in the same bytes: a watch whose client does
  not read holds its initial state's page there, so the tenant's next watches (any of its users,
  Watch and WatchBatches) and reads are refused while another tenant's watch goes on;
- a share larger than what tenants share is a configuration error naming both numbers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.rpc import detail_of, expect_error
from tests.support.unread_calls import UnreadCalls
from tests.support.waiting import wait_for
from tke.internal.apiserver.app import ApiserverConfig, LimitsConfig
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.config.loader import ConfigError, load
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

Code = grpc.StatusCode
GET = "/tke.platform.v1.ClusterService/Get"
WATCH = "/tke.platform.v1.ClusterService/Watch"
LIST = "/tke.platform.v1.ClusterService/List"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
TOKENS = (
    "alice-t,alice,u1,dev,team-a\n"
    "ann-t,ann,u2,dev,team-a\n"  # a second user of alice's tenant
    "bob-t,bob,u3,dev,team-b\n"
    "carol-t,carol,u4,dev,team-c\n"
    "controller-t,tke-controller,u5,tke:platform-admins,default\n"
)
# 6 in flight: tenants share 4, 2 at most each (one user may take both); 2 kept for platform
# administrators.
LIMITS = LimitsConfig(
    max_requests_inflight=6,
    max_requests_inflight_per_tenant=2,
    max_requests_inflight_per_user=2,
    requests_inflight_admin_reserve=2,
)
PROD = cluster_pb2.GetClusterRequest(name="prod")
KiB = 1024


def bearer(user: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {user}-t"),)


async def serve(
    etcd_config: EtcdConfig, tmp_path: Path, *, open_reflection: bool = False, limits: LimitsConfig = LIMITS
) -> Running:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(TOKENS)
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})],
        authorizers=[PluginConfig("allow-all")],
        open_reflection=open_reflection,
    )
    running = await start(local_config(etcd_config, auth=auth, limits=limits))
    try:
        for user in ("alice", "bob", "carol"):  # a cluster "prod" in team-a, team-b and team-c
            await stub(running, user).Create(cluster_pb2.CreateClusterRequest(cluster=cluster("prod")))
    except BaseException:
        await stop(running)
        raise
    return running


def stub(running: Running, user: str) -> cluster_pb2_grpc.ClusterServiceAsyncStub:
    return running.channel_with(f"{user}-t")[0]


@pytest.fixture
async def unread(etcd_config: EtcdConfig) -> AsyncIterator[list[UnreadCalls]]:
    """The tests' clients that do not read, closed at the end whatever happened."""
    clients: list[UnreadCalls] = []
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


async def connect(running: Running, clients: list[UnreadCalls]) -> UnreadCalls:
    client = await UnreadCalls.connect("127.0.0.1", running.port)
    clients.append(client)
    return client


def refusal(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """The ErrorInfo metadata of an in-flight refusal, after checking its reason and RetryInfo."""
    info = detail_of(err, error_details_pb2.ErrorInfo)
    assert info.reason == "TOO_MANY_REQUESTS", info
    assert detail_of(err, error_details_pb2.RetryInfo).retry_delay.seconds >= 1
    return dict(info.metadata)


async def answered(call_stub: cluster_pb2_grpc.ClusterServiceAsyncStub) -> cluster_pb2.Cluster | None:
    """Get "prod" of the caller's tenant; None when refused for calls in flight."""
    try:
        return await call_stub.Get(PROD, timeout=5)
    except grpc.aio.AioRpcError as err:
        assert err.code() == Code.RESOURCE_EXHAUSTED, err.details()
        return None


async def test_a_tenant_holding_its_share_does_not_stop_another_tenant(
    etcd_config: EtcdConfig, tmp_path: Path, unread: list[UnreadCalls]
) -> None:
    running = await serve(etcd_config, tmp_path)
    try:
        alice, ann, bob = stub(running, "alice"), stub(running, "ann"), stub(running, "bob")
        flood = await connect(running, unread)
        # Two users of team-a, one unread call each: the tenant's share.
        first = await flood.send(GET, PROD.SerializeToString(), bearer("alice"))
        second = await flood.send(GET, PROD.SerializeToString(), bearer("ann"))
        await flood.wait_answered({first, second})

        for user in (alice, ann):  # any user of the tenant
            err = await expect_error(user.Get(PROD, timeout=5), Code.RESOURCE_EXHAUSTED)
            assert refusal(err) == {"scope": "tenant", "tenant": "team-a", "limit": "2"}
            message = err.details() or ""
            assert "tenant 'team-a' already has 2 requests in flight" in message, message
            assert "max_requests_inflight_per_tenant = 2" in message, message
        # Another tenant is served, though the server's own limit (6) is far from reached.
        assert (await bob.Get(PROD, timeout=5)).metadata.tenant_id == "team-b"

        # An answer delivered gives its place back; the other unread one keeps its own.
        await flood.deliver(first)
        got = await wait_for(lambda: answered(alice), what="team-a admitted after one answer was delivered")
        assert got.metadata.tenant_id == "team-a"
        shares = running.apiserver.inflight_shares
        await wait_for(lambda: shares.inflight == {"team-a": 1}, what="only the unread call in flight")

        # The connection going gives the rest back, and no counter is left behind.
        await flood.close()
        await wait_for(lambda: not shares.inflight and shares.total == 0, what="team-a's places given back")
        assert await answered(ann) is not None
        await wait_for(
            lambda: running.apiserver.inflight.inflight == 0 and not shares._holders and not shares.inflight,
            what="every call ended, and no counter left",
        )
    finally:
        await stop(running)


async def test_one_user_cannot_take_its_tenants_whole_share(
    etcd_config: EtcdConfig, tmp_path: Path, unread: list[UnreadCalls]
) -> None:
    limits = LimitsConfig(
        max_requests_inflight=8, max_requests_inflight_per_tenant=4, requests_inflight_admin_reserve=2
    )
    assert limits.inflight_per_user == 2  # half the tenant's, by default
    running = await serve(etcd_config, tmp_path, limits=limits)
    try:
        shares = running.apiserver.inflight_shares
        flood = await connect(running, unread)
        sent = {await flood.send(GET, PROD.SerializeToString(), bearer("alice")) for _ in range(3)}
        await flood.wait_answered(sent)
        assert len(sent - flood.ended) == 2, "alice holds her two"
        err = await expect_error(stub(running, "alice").Get(PROD, timeout=5), Code.RESOURCE_EXHAUSTED)
        assert refusal(err) == {"scope": "user", "tenant": "team-a", "user": "alice", "limit": "2"}
        message = err.details() or ""
        assert "user 'alice' of tenant 'team-a' already has 2 requests in flight" in message, message
        assert "limits.max_requests_inflight_per_user = 2" in message, message
        # Her tenant's other user, its administrator say, is answered: team-a is at 2 of its 4.
        assert (await stub(running, "ann").Get(PROD, timeout=5)).metadata.tenant_id == "team-a"
        await flood.close()
        await wait_for(lambda: not shares.inflight_of_user and not shares.inflight, what="alice's places given back")
        assert await answered(stub(running, "alice"))
    finally:
        await stop(running)


async def test_platform_administrators_get_through_when_tenants_hold_every_place_they_share(
    etcd_config: EtcdConfig, tmp_path: Path, unread: list[UnreadCalls]
) -> None:
    running = await serve(etcd_config, tmp_path)
    try:
        flood = await connect(running, unread)
        # Three unread calls each of team-a and team-b: two each are admitted, the third refused.
        sent = {await flood.send(GET, PROD.SerializeToString(), bearer(u)) for u in ("alice", "bob") for _ in range(3)}
        await flood.wait_answered(sent)
        # Tenants hold the 4 places they share: the controller's identity, a platform administrator
        # acting in every tenant, is answered...
        controller = stub(running, "controller")
        got = await controller.Get(cluster_pb2.GetClusterRequest(name="prod", tenant_id="team-c"), timeout=5)
        assert got.metadata.tenant_id == "team-c"
        # ... and team-c, which holds none, is refused.
        err = await expect_error(stub(running, "carol").Get(PROD, timeout=5), Code.RESOURCE_EXHAUSTED)
        assert refusal(err) == {"scope": "tenants", "limit": "4"}
        assert "maximum of 4 requests of tenants at once (2 more are kept for platform administrators)" in (
            err.details() or ""
        )
        assert len(sent - flood.ended) == 4, "two held per tenant"
        assert running.apiserver.inflight_shares.inflight == {"team-a": 2, "team-b": 2}
    finally:
        await stop(running)


async def test_unauthenticated_callers_hold_one_share_and_refused_ones_none(
    etcd_config: EtcdConfig, tmp_path: Path, unread: list[UnreadCalls]
) -> None:
    """Reflection open to everyone (auth.open_reflection): its unread streams, which hold about
    50 KB of descriptors each, count as one tenant's; calls with bad credentials take nothing."""
    running = await serve(etcd_config, tmp_path, open_reflection=True)
    try:
        flood = await connect(running, unread)
        describe = reflection_pb2.ServerReflectionRequest(file_containing_symbol="tke.platform.v1.ClusterService")
        sent = {await flood.send(REFLECTION, describe.SerializeToString()) for _ in range(6)}
        # (A stream's headers go out before its refusal: wait for the refusals' trailers.)
        await wait_for(lambda: len(sent & flood.ended) == 4, what="all but one share's streams refused")
        await flood.wait_answered(sent)
        assert len(sent - flood.ended) == 2, "one share held"
        assert running.apiserver.inflight_shares.inflight == {"": 2}
        # Authenticated tenants are served.
        assert (await stub(running, "bob").Get(PROD, timeout=5)).metadata.tenant_id == "team-b"
        shares = running.apiserver.inflight_shares
        await wait_for(lambda: shares.inflight == {"": 2}, what="bob's call ended")

        # A call whose credentials fail is refused before it takes a share.
        forged = {await flood.send(GET, PROD.SerializeToString(), bearer("mallory")) for _ in range(3)}
        await flood.wait_answered(forged)
        assert forged <= flood.ended
        assert running.apiserver.inflight_shares.inflight == {"": 2}
        err = await expect_error(running.clusters.Get(PROD, timeout=5), Code.UNAUTHENTICATED)
        assert running.apiserver.inflight_shares.inflight == {"": 2}, err.details()
    finally:
        await stop(running)


async def test_a_tenants_unread_answers_are_bounded_in_bytes(
    etcd_config: EtcdConfig, tmp_path: Path, unread: list[UnreadCalls]
) -> None:
    limits = LimitsConfig(
        max_requests_inflight=6,
        max_requests_inflight_per_tenant=4,
        max_requests_inflight_per_user=4,
        requests_inflight_admin_reserve=2,
        max_response_bytes_per_tenant=512 * KiB,
    )
    running = await serve(etcd_config, tmp_path, limits=limits)
    try:
        alice, bob = stub(running, "alice"), stub(running, "bob")
        for name in ("big-1", "big-2", "big-3"):  # 250 KB each in team-a, and one in team-b
            big = cluster(name)
            big.metadata.annotations["blob"] = "x" * 250_000
            await alice.Create(cluster_pb2.CreateClusterRequest(cluster=big))
            if name == "big-1":
                await bob.Create(cluster_pb2.CreateClusterRequest(cluster=big))
        flood = await connect(running, unread)
        shares = running.apiserver.inflight_shares

        # Holding nothing, team-a gets its list of 750 KB, more than its 512 KiB...
        listing = await flood.send(LIST, cluster_pb2.ListClustersRequest().SerializeToString(), bearer("alice"))
        await flood.wait_answered({listing})
        assert listing not in flood.ended
        # ... and, while it is unread, even a small answer is refused, before any work.
        err = await expect_error(alice.Get(PROD, timeout=5), Code.RESOURCE_EXHAUSTED)
        assert refusal(err) == {"scope": "tenant_bytes", "tenant": "team-a", "limit": str(512 * KiB)}
        message = err.details() or ""
        assert "tenant 'team-a' has 0.7 MiB of responses not yet delivered, and may have 0.5 MiB" in message, message
        assert "limits.max_response_bytes_per_tenant = 524288" in message, message
        # Another tenant's reads go on.
        got = await bob.Get(cluster_pb2.GetClusterRequest(name="big-1"), timeout=5)
        assert got.metadata.tenant_id == "team-b"

        await flood.deliver(listing)
        await wait_for(lambda: answered(alice), what="team-a answered once its list was delivered")

        # Two unread answers of 250 KB: a third would go over, a small one still fits.
        big_1 = cluster_pb2.GetClusterRequest(name="big-1").SerializeToString()
        held = {await flood.send(GET, big_1, bearer("alice")) for _ in range(2)}
        await flood.wait_answered(held)
        await wait_for(lambda: shares.inflight.get("team-a") == 2, what="only team-a's two unread calls in flight")
        err = await expect_error(
            alice.Get(cluster_pb2.GetClusterRequest(name="big-2"), timeout=5), Code.RESOURCE_EXHAUSTED
        )
        assert refusal(err)["scope"] == "tenant_bytes"
        assert (await alice.Get(PROD, timeout=5)).metadata.name == "prod"

        # The connection going gives the bytes back, and no count is left behind.
        await flood.close()
        await wait_for(lambda: not shares.bytes_held and not shares.inflight, what="team-a's answers given back")
        assert (await alice.Get(cluster_pb2.GetClusterRequest(name="big-2"), timeout=5)).metadata.name == "big-2"
        # (its done callback runs once grpc has finished the call, after the client has the answer)
        await wait_for(lambda: not shares._sizes and not shares.bytes_held, what="the last answer's bytes given back")
    finally:
        await stop(running)


async def test_a_tenants_unread_watches_are_bounded_in_bytes(
    etcd_config: EtcdConfig, tmp_path: Path, unread: list[UnreadCalls]
) -> None:
    limits = replace(LIMITS, max_response_bytes_per_tenant=512 * KiB)
    running = await serve(etcd_config, tmp_path, limits=limits)
    try:
        alice, ann, bob = stub(running, "alice"), stub(running, "ann"), stub(running, "bob")
        for name in ("big-1", "big-2", "big-3"):  # 250 KB each in team-a
            big = cluster(name)
            big.metadata.annotations["blob"] = "x" * 250_000
            await alice.Create(cluster_pb2.CreateClusterRequest(cluster=big))
        shares = running.apiserver.inflight_shares

        # A watch of team-a's whose client does not read: its initial state (750 KB) waits, and
        # counts, however many watches or users the tenant has.
        flood = await connect(running, unread)
        stalled = await flood.send(WATCH, cluster_pb2.WatchClustersRequest().SerializeToString(), bearer("alice"))
        await flood.wait_answered({stalled})
        await wait_for(
            lambda: shares.bytes_held.get("team-a", 0) > 512 * KiB, what="the unread watch's page counted for team-a"
        )
        for user in (alice, ann):
            for watch in (user.Watch, user.WatchBatches):
                err = await expect_error(
                    watch(cluster_pb2.WatchClustersRequest(), timeout=5).read(), Code.RESOURCE_EXHAUSTED
                )
                assert refusal(err) == {"scope": "tenant_bytes", "tenant": "team-a", "limit": str(512 * KiB)}
        await expect_error(ann.Get(PROD, timeout=5), Code.RESOURCE_EXHAUSTED)
        # Another tenant's watch goes on.
        first = await bob.Watch(cluster_pb2.WatchClustersRequest(), timeout=5).read()
        assert isinstance(first, cluster_pb2.ClusterEvent) and first.object.metadata.name == "prod"

        # The connection going gives the bytes back: team-a watches again.
        await flood.close()
        await wait_for(lambda: not shares.bytes_held, what="the unread watch's bytes given back")
        batch = await ann.WatchBatches(cluster_pb2.WatchClustersRequest(), timeout=5).read()
        assert isinstance(batch, cluster_pb2.ClusterEventBatch)
        assert {e.object.metadata.name for e in batch.events} >= {"big-1", "prod"}
    finally:
        await stop(running)


def test_a_share_larger_than_what_tenants_share_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        LimitsConfig(max_requests_inflight_per_tenant=500)
    assert str(info.value) == (
        "max_requests_inflight_per_tenant (500) must be at most max_requests_inflight (400) minus "
        "requests_inflight_admin_reserve (40), the 360 calls tenants share"
    )
    with pytest.raises(ValueError, match=r"requests_inflight_admin_reserve \(400\) must be 0 or more and less than"):
        LimitsConfig(requests_inflight_admin_reserve=400)
    with pytest.raises(ValueError, match="max_requests_inflight_per_tenant must be at least 1"):
        LimitsConfig(max_requests_inflight_per_tenant=0)
    with pytest.raises(ValueError, match=r"max_requests_inflight_per_user \(81\) must be 1 to the tenant's share"):
        LimitsConfig(max_requests_inflight_per_user=81)
    with pytest.raises(ValueError, match="max_response_bytes_per_tenant must be greater than 0"):
        LimitsConfig(max_response_bytes_per_tenant=0)

    # In the configuration file, the error names the table.
    toml = tmp_path / "apiserver.toml"
    toml.write_text("[limits]\nmax_requests_inflight = 100\nmax_requests_inflight_per_tenant = 101\n")
    with pytest.raises(ConfigError) as err:
        load(toml, ApiserverConfig)
    assert "limits: max_requests_inflight_per_tenant (101) must be at most max_requests_inflight (100)" in str(
        err.value
    )

    # The defaults follow max_requests_inflight: a fifth per tenant, a tenth kept for administrators.
    limits = LimitsConfig()
    assert (limits.inflight_per_tenant, limits.inflight_admin_reserve, limits.inflight_tenants) == (80, 40, 360)
    small = LimitsConfig(max_requests_inflight=2)  # a configuration valid before shares existed still is
    assert (small.inflight_per_tenant, small.inflight_admin_reserve, small.inflight_tenants) == (1, 0, 2)
