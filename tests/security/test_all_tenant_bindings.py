"""Rule (as the README says): a user with an all-tenant binding acts in every tenant it grants:
with an admin role it lists and watches tenant "*" and reads any tenant's objects, like a
platform administrator, while a tenant admin still cannot name "*"."""

from __future__ import annotations

import grpc

from tests.security.platform import Platform, binding
from tests.support.apiserver import cluster
from tests.support.rpc import expect_error, next_message
from tke.auth.v1 import accounts_pb2
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode


async def create_in(platform: Platform, tenant: str, name: str) -> None:
    c = cluster(name)
    c.metadata.tenant_id = tenant
    await platform.root.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))


async def test_an_all_tenant_admin_lists_and_watches_every_tenant(platform: Platform) -> None:
    await create_in(platform, "team-a", "a1")
    await create_in(platform, "team-b", "b1")
    await platform.add_user("auditor", "team-a")
    await platform.bind(binding("auditor", "team-a", "admin", users=["auditor"], all_tenants=True))
    auditor = await platform.login("auditor")
    ann = await platform.member("ann", "team-a", "admin")

    listed = await auditor.clusters.List(cluster_pb2.ListClustersRequest(tenant_id="*"))
    assert {(c.metadata.tenant_id, c.metadata.name) for c in listed.items} == {("team-a", "a1"), ("team-b", "b1")}
    got = await auditor.clusters.Get(cluster_pb2.GetClusterRequest(name="b1", tenant_id="team-b"))
    assert got.metadata.tenant_id == "team-b"
    users = await auditor.auth.ListUsers(accounts_pb2.ListUsersRequest(tenant_id="*"))
    assert {"root", "auditor", "ann"} <= {u.metadata.name for u in users.items}

    watch = auditor.clusters.Watch(cluster_pb2.WatchClustersRequest(tenant_id="*"))
    seen = set()
    while True:
        event = await next_message(watch)
        if event.type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK:
            break
        seen.add(event.object.metadata.name)
    assert seen == {"a1", "b1"}
    await create_in(platform, "team-c", "c1")  # a tenant that did not exist when the binding was made
    event = await next_message(watch)
    while event.type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK:
        event = await next_message(watch)
    assert (event.type, event.object.metadata.tenant_id) == (meta_pb2.WATCH_EVENT_TYPE_ADDED, "team-c")
    watch.cancel()

    # An admin of one tenant is not one of every tenant.
    await expect_error(ann.clusters.List(cluster_pb2.ListClustersRequest(tenant_id="*")), Code.PERMISSION_DENIED)
    stream = ann.clusters.Watch(cluster_pb2.WatchClustersRequest(tenant_id="*"))
    await expect_error(stream.read(), Code.PERMISSION_DENIED)
    await expect_error(ann.auth.ListUsers(accounts_pb2.ListUsersRequest(tenant_id="*")), Code.PERMISSION_DENIED)
    await ann.clusters.List(cluster_pb2.ListClustersRequest())
