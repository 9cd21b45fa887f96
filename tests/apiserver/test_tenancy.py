"""Static-token authentication and tenant isolation: a tenant sees only its own objects, and
another tenant's object is NOT_FOUND."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.support.apiserver import READ_PATHS, Running, cluster, local_config, start, stop
from tests.support.rpc import expect_error, health_check, next_message
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode

TOKENS = """\
# token,user,uid,groups,tenant
admin-t,admin,u0,tke:platform-admins,default
alice-t,alice,u1,dev,team-a
bob-t,bob,u2,dev,team-b
"""


@pytest.fixture(params=READ_PATHS)
async def secured(request: pytest.FixtureRequest, etcd_config: EtcdConfig, tmp_path: Path) -> AsyncIterator[Running]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(TOKENS)
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})],
        authorizers=[PluginConfig("allow-all")],
    )
    # Tenancy holds with the reads answered by the watch cache and by etcd.
    running = await start(replace(local_config(etcd_config, watch_cache=request.param == "watch-cache"), auth=auth))
    try:
        yield running
    finally:
        await stop(running)


async def test_calls_without_a_valid_token_are_unauthenticated(secured: Running) -> None:
    err = await expect_error(secured.clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED)
    assert "Bearer" in (err.details() or "")
    wrong, _ = secured.channel_with("not-a-token")
    await expect_error(wrong.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED)
    call = secured.clusters.Watch(cluster_pb2.WatchClustersRequest())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == Code.UNAUTHENTICATED


async def test_two_authorization_headers_are_unauthenticated_whichever_comes_first(secured: Running) -> None:
    """A proxy in front may check one header and the server would use the other: a call sending
    two credentials is refused, whichever is valid and in whatever order."""
    await secured.clusters.Create(
        cluster_pb2.CreateClusterRequest(cluster=cluster("mine")), metadata=(("authorization", "Bearer alice-t"),)
    )
    for first, second in [("alice-t", "bob-t"), ("bob-t", "alice-t"), ("alice-t", "alice-t")]:
        metadata = (("authorization", f"Bearer {first}"), ("authorization", f"Bearer {second}"))
        err = await expect_error(
            secured.clusters.Get(cluster_pb2.GetClusterRequest(name="mine"), metadata=metadata), Code.UNAUTHENTICATED
        )
        assert "more than one 'authorization' header" in (err.details() or "")
        call = secured.clusters.Watch(cluster_pb2.WatchClustersRequest(), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == Code.UNAUTHENTICATED
    got = await secured.clusters.Get(
        cluster_pb2.GetClusterRequest(name="mine"), metadata=(("authorization", "Bearer alice-t"),)
    )
    assert got.metadata.tenant_id == "team-a"


async def test_health_is_open(secured: Running) -> None:
    resp = await health_check(secured.channel)(health_pb2.HealthCheckRequest(service="tke.platform.v1.ClusterService"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_objects_carry_the_creators_tenant_and_other_tenants_cannot_see_them(secured: Running) -> None:
    alice, _ = secured.channel_with("alice-t")
    bob, _ = secured.channel_with("bob-t")
    admin, _ = secured.channel_with("admin-t")
    mine = cluster("shared-name")
    mine.metadata.tenant_id = "team-b"  # not alice's to choose
    await expect_error(alice.Create(cluster_pb2.CreateClusterRequest(cluster=mine)), Code.PERMISSION_DENIED)
    created = await alice.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("shared-name")))
    assert created.metadata.tenant_id == "team-a"
    # The same name in another tenant is another object.
    await bob.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("shared-name", {"owner": "bob"})))
    got = await bob.Get(cluster_pb2.GetClusterRequest(name="shared-name"))
    assert got.metadata.labels["owner"] == "bob"
    await expect_error(bob.Get(cluster_pb2.GetClusterRequest(name="shared-name", tenant_id="team-a")), Code.NOT_FOUND)
    await expect_error(
        bob.Delete(cluster_pb2.DeleteClusterRequest(name="shared-name", tenant_id="team-a")), Code.NOT_FOUND
    )
    await expect_error(bob.List(cluster_pb2.ListClustersRequest(tenant_id="team-a")), Code.PERMISSION_DENIED)
    await expect_error(bob.List(cluster_pb2.ListClustersRequest(tenant_id="*")), Code.PERMISSION_DENIED)
    listed = await alice.List(cluster_pb2.ListClustersRequest())
    assert [(c.metadata.tenant_id, c.metadata.name) for c in listed.items] == [("team-a", "shared-name")]
    # The platform administrator sees every tenant.
    everything = await admin.List(cluster_pb2.ListClustersRequest(tenant_id="*"))
    assert sorted(c.metadata.tenant_id for c in everything.items) == ["team-a", "team-b"]
    theirs = await admin.Get(cluster_pb2.GetClusterRequest(name="shared-name", tenant_id="team-b"))
    assert theirs.metadata.labels["owner"] == "bob"


async def test_watch_sees_only_the_callers_tenant(secured: Running) -> None:
    alice, _ = secured.channel_with("alice-t")
    bob, _ = secured.channel_with("bob-t")
    call = alice.Watch(cluster_pb2.WatchClustersRequest())
    first = await next_message(call)
    assert first.type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK
    await bob.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("bobs")))
    await alice.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("alices")))
    async with asyncio.timeout(30):
        while True:
            event = await next_message(call)
            if event.type != meta_pb2.WATCH_EVENT_TYPE_BOOKMARK:
                break
    assert event.object.metadata.name == "alices"
    call.cancel()
