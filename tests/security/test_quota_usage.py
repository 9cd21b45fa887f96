"""Seeing a tenant's quotas and usage (QuotaService/Get, internal/apiserver/quota_service.py),
on the private cloud's platform (accounts, policy centre) over a real etcd:

- A tenant's users see, per resource, what the tenant uses and its limit, with the option that
  sets the limit; the numbers follow creates and deletes at once, and the bytes are exactly the
  keys and values etcd holds for the tenant.
- A tenant's own quota is shown with its option (`quotas.tenants."team-b".clusters`).
- Through the policy: the built-in admin, editor and viewer roles may read their tenant's
  quotas, a narrower role may not; another tenant's quotas are PERMISSION_DENIED, also behind
  the allow-all authorizer; platform administrators read any tenant's.
- Bad input is INVALID_ARGUMENT naming tenant_id; with quotas off the answer says so.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from tests.security.platform import Client, Platform, environment, private_cloud, role, start_platform, stop_platform
from tests.security.tenancy import ALICE, BOB, tokens_file
from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.rpc import detail_of, expect_error, health_check
from tke.auth.v1 import accounts_pb2, policy_pb2
from tke.internal.apiserver.quota import QuotaConfig, TenantQuota
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, quota_pb2, quota_pb2_grpc

Code = grpc.StatusCode
Start = Callable[[QuotaConfig], Awaitable[Platform]]
ORDER = ["clusters", "machines", "events", "roles", "rolebindings", "users", "apikeys", "bytes"]


@pytest.fixture
async def with_quotas(etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Start]:
    for key, value in environment().items():
        monkeypatch.setenv(key, value)
    started: list[Platform] = []

    async def starting(quotas: QuotaConfig) -> Platform:
        audit = tmp_path / "audit.jsonl"
        platform = await start_platform(replace(private_cloud(etcd_config, audit), quotas=quotas), audit)
        started.append(platform)
        return platform

    yield starting
    for platform in started:
        await stop_platform(platform)


def quotas_of(client: Client | Running) -> quota_pb2_grpc.QuotaServiceAsyncStub:
    return client.quotas if isinstance(client, Client) else quota_pb2_grpc.QuotaServiceStub(client.channel)


async def usage(client: Client | Running, tenant: str = "") -> dict[str, tuple[int, int, str]]:
    """resource -> (used, limit, option), checking the answer's order and tenant."""
    got = await quotas_of(client).Get(quota_pb2.GetQuotaRequest(tenant_id=tenant))
    assert got.enabled
    assert [r.resource for r in got.resources] == ORDER
    if tenant:
        assert got.tenant_id == tenant
    return {r.resource: (r.used, r.limit, r.quota) for r in got.resources}


async def stored_bytes(platform: Platform, tenant: str) -> int:
    """What etcd holds for `tenant`: its objects' keys and values, and its users' and API keys'
    records (JSON naming their tenant)."""
    store, prefix = platform.api.apiserver.store, platform.api.apiserver.prefix
    items = []
    for plural in ("clusters", "machines", "events", "roles", "rolebindings"):
        items += (await store.list(f"{prefix}/{plural}/{tenant}/")).items
    for plural in ("users", "apikeys"):
        items += [
            i for i in (await store.list(f"{prefix}/auth/{plural}/")).items if json.loads(i.value)["tenant"] == tenant
        ]
    return sum(len(i.key) + len(i.value) for i in items)


async def test_a_tenant_sees_what_it_uses_of_each_quota_after_creates_and_deletes(with_quotas: Start) -> None:
    platform = await with_quotas(QuotaConfig(clusters=3))
    ann = await platform.member("ann", "team-a", "editor")

    before = await usage(ann)
    assert before["clusters"] == (0, 3, "quotas.clusters")
    assert before["users"] == (1, 1000, "quotas.users")  # ann herself
    assert before["rolebindings"] == (1, 1000, "quotas.rolebindings")  # ann-editor, made by root
    assert before["apikeys"] == (0, 2000, "quotas.apikeys")
    assert before["bytes"][1:] == (64 * 1024 * 1024, "quotas.bytes")

    for name in ("c1", "c2"):
        await ann.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(name)))
    await ann.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(description="ci"))
    grown = await usage(ann)
    assert grown["clusters"] == (2, 3, "quotas.clusters")  # at once: no wait for the watch
    assert grown["apikeys"][0] == 1
    assert grown["bytes"][0] > before["bytes"][0]

    await ann.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="c1"))
    after = await usage(ann)
    assert after["clusters"] == (1, 3, "quotas.clusters")  # freed at once
    assert after["bytes"][0] < grown["bytes"][0]

    # The third create is admitted and the fourth refused with the numbers the usage showed.
    await ann.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c3")))
    await ann.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c4")))
    assert (await usage(ann))["clusters"] == (3, 3, "quotas.clusters")
    await expect_error(
        ann.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c5"))), Code.RESOURCE_EXHAUSTED
    )
    assert (await usage(ann))["clusters"] == (3, 3, "quotas.clusters")  # the refused one holds nothing


async def test_the_bytes_used_are_what_etcd_holds_for_the_tenant(with_quotas: Start) -> None:
    platform = await with_quotas(QuotaConfig())
    ann = await platform.member("ann", "team-a", "admin")
    await ann.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1", labels={"k": "v" * 60})))
    await ann.policy.CreateRole(policy_pb2.CreateRoleRequest(role=role("r", "team-a", (["get"], ["clusters"]))))
    await ann.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(description="ci"))
    assert (await usage(ann))["bytes"][0] == await stored_bytes(platform, "team-a")
    await ann.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="c1"))
    assert (await usage(ann))["bytes"][0] == await stored_bytes(platform, "team-a")


async def test_a_tenants_own_quota_is_shown_with_the_option_that_sets_it(with_quotas: Start) -> None:
    platform = await with_quotas(QuotaConfig(clusters=1, tenants={"team-b": TenantQuota(clusters=5, users=2)}))
    bea = await platform.member("bea", "team-b", "viewer")
    got = await usage(bea)
    assert got["clusters"] == (0, 5, 'quotas.tenants."team-b".clusters')
    assert got["users"] == (1, 2, 'quotas.tenants."team-b".users')
    assert got["machines"] == (0, 2000, "quotas.machines")  # not overridden: the default
    ann = await platform.member("ann", "team-a", "viewer")
    assert (await usage(ann))["clusters"] == (0, 1, "quotas.clusters")


async def test_who_may_read_a_tenants_quotas(with_quotas: Start) -> None:
    platform = await with_quotas(QuotaConfig(clusters=7))
    ann = await platform.member("ann", "team-a", "admin")
    await ann.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1")))
    for name, role_name in (("ed", "editor"), ("vic", "viewer")):
        member = await platform.member(name, "team-a", role_name)
        assert (await usage(member))["clusters"] == (1, 7, "quotas.clusters")

    # A role without "get" on "quotas" does not show them, even in the caller's own tenant.
    await ann.policy.CreateRole(
        policy_pb2.CreateRoleRequest(role=role("cluster-reader", "team-a", (["get", "list"], ["clusters"])))
    )
    reader = await platform.member("rea", "team-a", "cluster-reader")
    await reader.clusters.List(cluster_pb2.ListClustersRequest())
    err = await expect_error(quotas_of(reader).Get(quota_pb2.GetQuotaRequest()), Code.PERMISSION_DENIED)
    assert "user 'rea' may not get quotas in tenant 'team-a'" in (err.details() or "")

    # Another tenant's quotas: PERMISSION_DENIED, the same whether it holds anything or exists.
    bea = await platform.member("bea", "team-b", "admin")
    await bea.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("b1")))
    for tenant in ("team-b", "no-such-tenant"):
        err = await expect_error(
            quotas_of(ann).Get(quota_pb2.GetQuotaRequest(tenant_id=tenant)), Code.PERMISSION_DENIED
        )
        assert f"user 'ann' may not get quotas in tenant '{tenant}'" in (err.details() or "")
    await expect_error(quotas_of(ann).Get(quota_pb2.GetQuotaRequest(tenant_id="*")), Code.PERMISSION_DENIED)

    # A platform administrator reads any tenant's, one at a time.
    assert (await usage(platform.root, "team-a"))["clusters"] == (1, 7, "quotas.clusters")
    assert (await usage(platform.root, "team-b"))["clusters"] == (1, 7, "quotas.clusters")
    assert (await usage(platform.root, "quiet"))["clusters"] == (0, 7, "quotas.clusters")
    for bad in ("*", "Team_B"):
        err = await expect_error(
            quotas_of(platform.root).Get(quota_pb2.GetQuotaRequest(tenant_id=bad)), Code.INVALID_ARGUMENT
        )
        assert [v.field for v in detail_of(err, error_details_pb2.BadRequest).field_violations] == ["tenant_id"]


async def test_another_tenants_quotas_are_refused_behind_the_allow_all_authorizer(
    etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens_file(tmp_path))})],
        authorizers=[PluginConfig("allow-all")],
    )
    running = await start(replace(local_config(etcd_config), auth=auth))
    try:
        alice = quota_pb2_grpc.QuotaServiceStub(running.channel_of(ALICE.token))
        assert (await alice.Get(quota_pb2.GetQuotaRequest())).tenant_id == "team-a"
        err = await expect_error(alice.Get(quota_pb2.GetQuotaRequest(tenant_id=BOB.tenant)), Code.PERMISSION_DENIED)
        assert "user 'alice' may not get quotas in tenant 'team-b'" in (err.details() or "")
    finally:
        await stop(running)


async def test_with_quotas_off_the_answer_says_so_and_the_service_is_served(etcd_config: EtcdConfig) -> None:
    running = await start(local_config(etcd_config, quotas=QuotaConfig(enabled=False)))
    try:
        got = await quotas_of(running).Get(quota_pb2.GetQuotaRequest(tenant_id="team-a"))
        assert (got.tenant_id, got.enabled, list(got.resources)) == ("team-a", False, [])
        answer = await health_check(running.channel)(
            health_pb2.HealthCheckRequest(service="tke.platform.v1.QuotaService")
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await stop(running)
