"""Security model: what one tenant may store (`[quotas]`, internal/apiserver/quota.py), probed as a
hostile tenant would, so that no tenant can fill etcd and take the platform from the others.

- The (N+1)th object of a kind past the tenant's quota is RESOURCE_EXHAUSTED with an ErrorInfo
  (reason QUOTA_EXCEEDED) naming the tenant, the resource, what is used and the limit; nothing
  is stored. Deleting one frees its place at once. Another tenant is not affected.
- Many creates at once in one apiserver never pass the quota together.
- The bytes quota refuses a create, or an update that grows an object, past it; shrinking and
  deleting are always allowed.
- A tenant's own quota (`[quotas.tenants."team-b"]`) replaces the default for it only.
- The policy centre's roles and role bindings count against their tenant the same way.
- Platform administrators' writes (the controller's events) are counted but never refused.
- A bad quota in the configuration is refused at start, naming the option.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.security.platform import binding, role
from tests.security.tenancy import ALICE, BOB, ROOT, Caller, api_of, auth_config, grant_tenant_admins
from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.rpc import expect_error, quota_info
from tke.auth.v1 import policy_pb2
from tke.internal.apiserver.app import ApiserverConfig
from tke.internal.apiserver.quota import QuotaConfig, TenantQuota
from tke.internal.config.loader import ConfigError, load
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, event_pb2, event_pb2_grpc

Code = grpc.StatusCode
Start = Callable[[QuotaConfig], Awaitable[Running]]


@pytest.fixture
async def secured(etcd_config: EtcdConfig, tmp_path: Path) -> AsyncIterator[Start]:
    """Starts an apiserver with these quotas, and tenant admins alice (team-a) and bob (team-b)."""
    started: list[Running] = []

    async def with_quotas(quotas: QuotaConfig) -> Running:
        running = await start(replace(local_config(etcd_config), auth=auth_config(tmp_path), quotas=quotas))
        started.append(running)
        root = api_of(running, ROOT)
        for caller in (ALICE, BOB):
            await grant_tenant_admins(root, api_of(running, caller), caller)
        return running

    yield with_quotas
    for running in started:
        await stop(running)


def create(running: Running, caller: Caller, c: cluster_pb2.Cluster) -> Awaitable[cluster_pb2.Cluster]:
    return api_of(running, caller).clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))


async def names(running: Running, caller: Caller) -> list[str]:
    page = await api_of(running, caller).clusters.List(cluster_pb2.ListClustersRequest())
    return sorted(c.metadata.name for c in page.items)


async def test_the_create_past_the_count_quota_is_refused_and_a_delete_frees_its_place(secured: Start) -> None:
    running = await secured(QuotaConfig(clusters=3))
    for i in range(3):
        await create(running, ALICE, cluster(f"a{i}"))

    err = await expect_error(create(running, ALICE, cluster("a3")), Code.RESOURCE_EXHAUSTED)
    assert err.details() == (
        "tenant 'team-a' has 3 of 3 clusters (quota quotas.clusters); delete some or ask an operator to raise it"
    )
    assert quota_info(err) == {
        "tenant": "team-a",
        "resource": "clusters",
        "used": "3",
        "limit": "3",
        "quota": "quotas.clusters",
    }
    assert await names(running, ALICE) == ["a0", "a1", "a2"]  # nothing stored

    # Another tenant has its own quota, untouched by team-a's.
    for i in range(3):
        await create(running, BOB, cluster(f"b{i}"))

    # A delete frees its place at once: the very next create is admitted.
    alice = api_of(running, ALICE)
    await alice.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="a0"))
    await create(running, ALICE, cluster("a3"))
    assert await names(running, ALICE) == ["a1", "a2", "a3"]
    await expect_error(create(running, ALICE, cluster("a4")), Code.RESOURCE_EXHAUSTED)


async def test_concurrent_creates_in_one_apiserver_never_pass_the_quota(secured: Start) -> None:
    running = await secured(QuotaConfig(clusters=10))
    results = await asyncio.gather(
        *(create(running, ALICE, cluster(f"c{i:02d}")) for i in range(50)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert all(r.code() == Code.RESOURCE_EXHAUSTED for r in refused), [r.details() for r in refused]
    assert len(refused) == 40
    assert len(await names(running, ALICE)) == 10


async def test_the_bytes_quota_refuses_a_create_or_an_update_that_grows_past_it(secured: Start) -> None:
    running = await secured(QuotaConfig(bytes=20_000))
    alice = api_of(running, ALICE)
    small = await alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("small")))

    grown = cluster("small", labels={f"key-{i}": "v" * 60 for i in range(400)})  # about 28 KB
    mask = field_mask_pb2.FieldMask(paths=["metadata.labels"])
    err = await expect_error(
        alice.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=grown, update_mask=mask)),
        Code.RESOURCE_EXHAUSTED,
    )
    info = quota_info(err)
    assert (info["tenant"], info["resource"], info["limit"], info["quota"]) == (
        "team-a",
        "bytes",
        "20000",
        "quotas.bytes",
    )
    assert 0 < int(info["used"]) < 20_000
    assert "tenant 'team-a' stores" in (err.details() or "") and "this cluster needs" in (err.details() or "")
    got = await alice.clusters.Get(cluster_pb2.GetClusterRequest(name="small"))
    assert got.metadata.resource_version == small.metadata.resource_version  # not written

    big = cluster("big", labels={f"key-{i}": "v" * 60 for i in range(400)})
    await expect_error(create(running, ALICE, big), Code.RESOURCE_EXHAUSTED)
    assert await names(running, ALICE) == ["small"]

    # Within the quota an object may grow, and shrink again.
    some = cluster("small", labels={f"key-{i}": "v" * 60 for i in range(100)})  # about 7 KB
    await alice.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=some, update_mask=mask))
    await alice.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=cluster("small"), update_mask=mask))
    # Bob's bytes are his own.
    await create(running, BOB, cluster("big", labels={f"key-{i}": "v" * 60 for i in range(200)}))


async def test_a_tenants_own_quota_replaces_the_default_for_it_only(secured: Start) -> None:
    running = await secured(QuotaConfig(clusters=1, tenants={"team-b": TenantQuota(clusters=3)}))
    await create(running, ALICE, cluster("a0"))
    await expect_error(create(running, ALICE, cluster("a1")), Code.RESOURCE_EXHAUSTED)
    for i in range(3):
        await create(running, BOB, cluster(f"b{i}"))
    err = await expect_error(create(running, BOB, cluster("b3")), Code.RESOURCE_EXHAUSTED)
    assert quota_info(err)["quota"] == 'quotas.tenants."team-b".clusters'
    assert "tenant 'team-b' has 3 of 3 clusters" in (err.details() or "")


def _event(name: str, tenant: str) -> event_pb2.Event:
    e = event_pb2.Event()
    e.metadata.name, e.metadata.tenant_id = name, tenant
    e.spec.involved_object.kind, e.spec.involved_object.name = "Cluster", "a0"
    e.spec.reason, e.spec.type = "Probed", event_pb2.EVENT_TYPE_NORMAL
    return e


def events_of(running: Running, caller: Caller) -> event_pb2_grpc.EventServiceAsyncStub:
    creds = grpc.composite_channel_credentials(
        grpc.local_channel_credentials(), grpc.access_token_call_credentials(caller.token)
    )
    channel = grpc.aio.secure_channel(running.address, creds)
    running.extra_channels.append(channel)
    return event_pb2_grpc.EventServiceStub(channel)


async def test_a_tenant_at_its_quota_cannot_make_the_platform_lose_its_events(secured: Start) -> None:
    running = await secured(QuotaConfig(events=2))
    alice = events_of(running, ALICE)
    for i in range(2):
        await alice.Create(event_pb2.CreateEventRequest(event=_event(f"e{i}", "team-a")))
    err = await expect_error(
        alice.Create(event_pb2.CreateEventRequest(event=_event("e2", "team-a"))), Code.RESOURCE_EXHAUSTED
    )
    assert quota_info(err)["resource"] == "events"
    # The controller (a platform administrator) still records what happened in team-a.
    await events_of(running, ROOT).Create(event_pb2.CreateEventRequest(event=_event("controller", "team-a")))
    # ... and it counts: team-a holds 3 events now.
    err = await expect_error(
        alice.Create(event_pb2.CreateEventRequest(event=_event("e3", "team-a"))), Code.RESOURCE_EXHAUSTED
    )
    assert quota_info(err)["used"] == "3"


async def test_the_policy_centres_roles_and_bindings_count_against_their_tenant(secured: Start) -> None:
    running = await secured(QuotaConfig(roles=2, rolebindings=2))
    alice = api_of(running, ALICE).policy
    for i in range(2):
        await alice.CreateRole(policy_pb2.CreateRoleRequest(role=role(f"r{i}", "team-a", (["get"], ["clusters"]))))
    err = await expect_error(
        alice.CreateRole(policy_pb2.CreateRoleRequest(role=role("r2", "team-a", (["get"], ["clusters"])))),
        Code.RESOURCE_EXHAUSTED,
    )
    assert quota_info(err) == {
        "tenant": "team-a",
        "resource": "roles",
        "used": "2",
        "limit": "2",
        "quota": "quotas.roles",
    }
    # team-a holds the binding the platform administrator made for alice, and one of hers.
    await alice.CreateRoleBinding(
        policy_pb2.CreateRoleBindingRequest(role_binding=binding("viewers", "team-a", "viewer", users=["carol"]))
    )
    err = await expect_error(
        alice.CreateRoleBinding(
            policy_pb2.CreateRoleBindingRequest(role_binding=binding("more", "team-a", "viewer", users=["dave"]))
        ),
        Code.RESOURCE_EXHAUSTED,
    )
    assert (quota_info(err)["resource"], quota_info(err)["used"]) == ("rolebindings", "2")
    # Bob's tenant holds only his own binding.
    await api_of(running, BOB).policy.CreateRoleBinding(
        policy_pb2.CreateRoleBindingRequest(role_binding=binding("viewers", "team-b", "viewer", users=["carol"]))
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[quotas]\nclusters = -1\n", "quotas: clusters must be 0 (nothing allowed) or more"),
        ('[quotas]\nbytes = "64MiB"\n', "quotas.bytes: expected int, got str"),
        ("[quotas]\nclusterz = 5\n", "unknown option quotas.clusterz"),
        ('[quotas.tenants."team-a"]\nmachines = -5\n', "quotas.tenants.team-a: machines must be 0"),
        ('[quotas.tenants."Team_A"]\nclusters = 5\n', "quotas: tenants.'Team_A' is not a tenant name"),
        ('[quotas.tenants."team-a"]\nclusterz = 5\n', "unknown option quotas.tenants.team-a.clusterz"),
    ],
)
def test_a_bad_quota_is_refused_naming_the_option(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "apiserver.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        load(path, ApiserverConfig)
    assert message in str(raised.value)


def test_a_tenants_quotas_are_read_from_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "apiserver.toml"
    path.write_text('[quotas]\nclusters = 7\n[quotas.tenants."team-a"]\nbytes = 1048576\n')
    quotas = load(path, ApiserverConfig).quotas
    assert quotas.limit("team-a", "clusters") == (7, "quotas.clusters")
    assert quotas.limit("team-a", "bytes") == (1048576, 'quotas.tenants."team-a".bytes')
    assert quotas.limit("team-b", "bytes") == (QuotaConfig().bytes, "quotas.bytes")
