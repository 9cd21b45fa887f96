"""Security model: every token the servers hand out and read back is checked. A continue token
of a List (any kind, and ListUsers), a page token of ipamd's ListAllocations, a watch's
resource_version: made up, altered, another tenant's or another query's, from the future or out
of range, each is INVALID_ARGUMENT (OUT_OF_RANGE for a compacted revision); never INTERNAL,
never silently ignored. Probed as an attacker would, against real servers and etcd."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from tests.support.accounts import ADMIN, ADMIN_PASSWORD, accounts_config, environment
from tests.support.apiserver import Running, cluster, start, stop
from tests.support.ipamd_daemon import IpamdDaemon
from tests.support.rpc import bad_request_fields, expect_error
from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.meta.labels import parse_selector
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from tke.platform.v1 import cluster_pb2, machine_pb2

Code = grpc.StatusCode
TOKENS = "admin-t,admin,u0,tke:platform-admins,default\nalice-t,alice,u1,dev,team-a\nbob-t,bob,u2,dev,team-b\n"


@pytest.fixture
async def api(etcd_config: EtcdConfig, tmp_path: Path) -> AsyncIterator[Running]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(TOKENS)
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})], authorizers=[PluginConfig("allow-all")]
    )
    running = await start(replace(accounts_config(etcd_config), auth=auth))
    try:
        yield running
    finally:
        await stop(running)


async def seed(stub: object, names: list[str]) -> None:
    for name in names:
        await stub.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(name)))  # type: ignore[attr-defined]


def tampered(token: str) -> list[str]:
    """Variations an attacker tries on a real token."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    flip = bytearray(raw)
    flip[-3] ^= 0x01  # a bit of the position
    mac = bytearray(raw)
    mac[5] ^= 0x80  # a bit of the seal
    return [
        base64.urlsafe_b64encode(bytes(flip)).decode().rstrip("="),
        base64.urlsafe_b64encode(bytes(mac)).decode().rstrip("="),
        token[:-4],
        token + "AAAA",
        "not a token",
        "\u00e9\u00e9\u00e9",
        base64.urlsafe_b64encode(b'{"s":"/","r":1}').decode(),  # the old, unsealed format
        "A" * 100_000,
    ]


async def test_a_list_accepts_back_only_its_own_continue_tokens(api: Running) -> None:
    alice, _ = api.channel_with("alice-t")
    bob, _ = api.channel_with("bob-t")
    admin, _ = api.channel_with("admin-t")
    await seed(alice, [f"a{i}" for i in range(5)])
    await seed(bob, [f"b{i}" for i in range(5)])
    first = await alice.List(cluster_pb2.ListClustersRequest(page_size=2))
    token = first.metadata.continue_token
    assert token

    # The rightful use goes on, at the first page's revision.
    second = await alice.List(cluster_pb2.ListClustersRequest(page_size=2, continue_token=token))
    assert [c.metadata.name for c in second.items] == ["a2", "a3"]

    async def refused(stub: object, request: cluster_pb2.ListClustersRequest) -> None:
        err = await expect_error(stub.List(request), Code.INVALID_ARGUMENT)  # type: ignore[attr-defined]
        assert bad_request_fields(err) == ["continue_token"]

    for bad in tampered(token):
        await refused(alice, cluster_pb2.ListClustersRequest(page_size=2, continue_token=bad))
    # Another tenant's token, in that tenant's hands or replayed against another listing.
    await refused(bob, cluster_pb2.ListClustersRequest(page_size=2, continue_token=token))
    await refused(admin, cluster_pb2.ListClustersRequest(page_size=2, continue_token=token, tenant_id="team-b"))
    await refused(admin, cluster_pb2.ListClustersRequest(page_size=2, continue_token=token, tenant_id="*"))
    # The same tenant with another query: selector, page size, tenant spelled out.
    await refused(alice, cluster_pb2.ListClustersRequest(page_size=3, continue_token=token))
    await refused(alice, cluster_pb2.ListClustersRequest(page_size=2, continue_token=token, label_selector="x=y"))
    await refused(alice, cluster_pb2.ListClustersRequest(page_size=2, continue_token=token, tenant_id="team-a"))
    # And another kind's list.
    _, machines = api.channel_with("alice-t")
    err = await expect_error(
        machines.List(machine_pb2.ListMachinesRequest(page_size=2, continue_token=token)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["continue_token"]


async def test_a_token_sealed_with_a_leaked_key_is_still_checked(api: Running, etcd_config: EtcdConfig) -> None:
    """Whoever read the key out of etcd can seal tokens; what they say is checked anyway: a
    revision from the future is INVALID_ARGUMENT, one compacted away OUT_OF_RANGE, a position
    outside the tenant INVALID_ARGUMENT."""
    registry = api.apiserver.clusters
    admin, _ = api.channel_with("admin-t")
    await seed(admin, ["x1", "x2", "x3"])
    tokens = await registry.page_tokens()
    prefix = registry.tenant_prefix("default")
    query = b"leaked"

    async def listed(position: dict[str, object]) -> Code:
        token = tokens.seal(prefix.encode() + b"\0" + query, position)
        try:
            await registry.list("default", parse_selector(""), 1, token, query=query)
        except Exception as err:
            code: Code = err.code  # type: ignore[attr-defined]
            return code
        return Code.OK

    store = EtcdStore(etcd_config)
    try:
        now = await store.current_revision()
        assert await listed({"s": prefix, "r": now}) == Code.OK
        assert await listed({"s": prefix, "r": now + 10**9}) == Code.INVALID_ARGUMENT
        assert await listed({"s": registry.tenant_prefix("team-b"), "r": now}) == Code.INVALID_ARGUMENT
        assert await listed({"s": registry.root, "r": now}) == Code.INVALID_ARGUMENT
        assert await listed({"s": prefix, "r": 0}) == Code.INVALID_ARGUMENT
        assert await listed({"s": prefix, "r": "1"}) == Code.INVALID_ARGUMENT
        assert await listed({"s": 7, "r": now}) == Code.INVALID_ARGUMENT
        await store.compact(now)
        assert await listed({"s": prefix, "r": now - 1}) == Code.OUT_OF_RANGE
    finally:
        await store.close()


async def test_watch_resource_versions_from_the_future_or_not_numbers_are_invalid(api: Running) -> None:
    admin, _ = api.channel_with("admin-t")
    created = await admin.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("w1")))
    now = int(created.metadata.resource_version)
    for bad in (str(now + 10**6), str(2**63 - 1), "\u00b2", "-1", "1e3", " 1", "9" * 20):
        call = admin.Watch(cluster_pb2.WatchClustersRequest(resource_version=bad))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == Code.INVALID_ARGUMENT, (bad, info.value.details())
        assert "resource_version" in (info.value.details() or "")
    # The revision just written is fine, and so is the next one etcd has not reached yet but
    # which no one handed out: only what is beyond etcd's revision is refused.
    call = admin.Watch(cluster_pb2.WatchClustersRequest(resource_version=str(now)))
    first = await call.read()
    assert first is not grpc.aio.EOF
    call.cancel()


async def test_list_users_pages_with_sealed_tokens(etcd_config: EtcdConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in environment().items():
        monkeypatch.setenv(key, value)
    running = await start(accounts_config(etcd_config))
    try:
        auth = accounts_pb2_grpc.AuthServiceStub(running.channel)
        login = await auth.Login(accounts_pb2.LoginRequest(username=ADMIN, password=ADMIN_PASSWORD))
        admin = [("authorization", f"Bearer {login.token}")]
        for tenant in ("team-a", "team-b"):
            for i in range(3):
                user = accounts_pb2.User()
                user.metadata.name = f"{tenant}-user-{i}"
                user.metadata.tenant_id = tenant
                await auth.CreateUser(
                    accounts_pb2.CreateUserRequest(user=user, password="a long enough password"), metadata=admin
                )
        names, token = [], ""
        while True:
            page = await auth.ListUsers(
                accounts_pb2.ListUsersRequest(tenant_id="team-a", page_size=2, continue_token=token), metadata=admin
            )
            names += [u.metadata.name for u in page.items]
            token = page.metadata.continue_token
            if not token:
                break
            last = token
        assert names == [f"team-a-user-{i}" for i in range(3)]

        async def refused(request: accounts_pb2.ListUsersRequest) -> None:
            err = await expect_error(auth.ListUsers(request, metadata=admin), Code.INVALID_ARGUMENT)
            assert bad_request_fields(err) in (["continue_token"], ["page_size"])

        for bad in tampered(last):
            await refused(accounts_pb2.ListUsersRequest(tenant_id="team-a", page_size=2, continue_token=bad))
        await refused(accounts_pb2.ListUsersRequest(tenant_id="team-b", page_size=2, continue_token=last))
        await refused(accounts_pb2.ListUsersRequest(tenant_id="*", page_size=2, continue_token=last))
        await refused(accounts_pb2.ListUsersRequest(tenant_id="team-a", page_size=3, continue_token=last))
        await refused(accounts_pb2.ListUsersRequest(tenant_id="team-a", page_size=-1))
        await refused(accounts_pb2.ListUsersRequest(tenant_id="team-a", page_size=10**6))
    finally:
        await stop(running)


async def test_ipamd_page_tokens_are_bound_to_their_listing(etcd_config: EtcdConfig) -> None:
    with IpamdDaemon(etcd_config.endpoints, etcd_config.prefix) as ipamd:
        async with grpc.aio.insecure_channel(ipamd.target) as channel:
            stub = ipam_pb2_grpc.IPAMServiceStub(channel)
            for name, cidr in (("net-a", "10.91.0.0/24"), ("net-b", "10.92.0.0/24")):
                await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name=name, cidr=cidr)))
                for i in range(3):
                    owner = ipam_pb2.Owner(namespace="ns", pod_name=f"{name}-p{i}", pod_uid=f"{name}-u{i}")
                    await stub.Allocate(
                        ipam_pb2.AllocateRequest(
                            owner=owner, container_id=f"{name}-c{i}", ifname="eth0", node="n1", pool=name
                        )
                    )
            seen, token, tokens = [], "", []
            while True:
                page = await stub.ListAllocations(
                    ipam_pb2.ListAllocationsRequest(pool="net-a", page_size=2, page_token=token)
                )
                seen += [a.owner.pod_name for a in page.allocations]
                token = page.next_page_token
                if not token:
                    break
                tokens.append(token)
            assert sorted(seen) == [f"net-a-p{i}" for i in range(3)]
            token = tokens[0]

            async def refused(request: ipam_pb2.ListAllocationsRequest) -> None:
                err = await expect_error(stub.ListAllocations(request), Code.INVALID_ARGUMENT)
                assert bad_request_fields(err) == ["page_token"]

            for bad in tampered(token):
                await refused(ipam_pb2.ListAllocationsRequest(pool="net-a", page_size=2, page_token=bad))
            await refused(ipam_pb2.ListAllocationsRequest(pool="net-b", page_size=2, page_token=token))
            await refused(ipam_pb2.ListAllocationsRequest(pool="net-a", page_size=3, page_token=token))
            await refused(ipam_pb2.ListAllocationsRequest(node="n1", page_size=2, page_token=token))
            # The raw cursor the service used to take (a position, not a token) is no token either.
            await refused(ipam_pb2.ListAllocationsRequest(pool="net-a", page_size=2, page_token="net-a/0a5b0001"))
