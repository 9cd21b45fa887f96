"""Rule: a user can be disabled and enabled again (UpdateUser; CreateUser keeps spec.disabled). A
disabled user cannot log in, and its tokens and API keys stop working on every apiserver, not
only the one that wrote the change: each apiserver follows the account records through its own
etcd watch. Enabling it again brings its API keys back; the sessions it had stay ended."""

from __future__ import annotations

import grpc

from tests.security.platform import PASSWORD, Client, Platform, binding, private_cloud, user
from tests.support.apiserver import Running, start
from tests.support.rpc import expect_error
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode


async def refused_login(api: Running, name: str) -> None:
    stub = accounts_pb2_grpc.AuthServiceStub(api.channel)
    err = await expect_error(
        stub.Login(accounts_pb2.LoginRequest(username=name, password=PASSWORD)), Code.UNAUTHENTICATED
    )
    assert err.details() == "invalid user name or password"  # no hint that the password was right


async def answer(client: Client) -> grpc.StatusCode:
    try:
        await client.clusters.List(cluster_pb2.ListClustersRequest())
    except grpc.aio.AioRpcError as err:
        return err.code()
    return Code.OK


async def test_disabling_reaches_every_apiserver(platform: Platform, etcd_config: EtcdConfig) -> None:
    second = await start(private_cloud(etcd_config, platform.audit.with_name("audit-2.jsonl")))
    platform.others.append(second)

    # Created disabled: it cannot log in anywhere until enabled.
    created = await platform.root.auth.CreateUser(
        accounts_pb2.CreateUserRequest(user=user("eve", "team-a", disabled=True), password=PASSWORD)
    )
    assert created.spec.disabled
    await platform.bind(binding("eve-view", "team-a", "viewer", users=["eve"]))
    for api in (platform.api, second):
        await refused_login(api, "eve")
    enabled = await platform.root.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=user("eve")))
    assert not enabled.spec.disabled

    # Enabled: a token from the first apiserver and an API key work on both.
    eve = await platform.login("eve")
    key = await eve.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(description="eve's script"))
    clients = [Client(api, credential) for api in (platform.api, second) for credential in (eve.token, key.secret)]

    async def every_answer_is(code: grpc.StatusCode) -> bool:
        return all([await answer(c) == code for c in clients])

    await wait_for(lambda: every_answer_is(Code.OK), what="eve's token and key working on both apiservers")

    # Disabled through the first apiserver: refused on both, token and key alike.
    await platform.root.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=user("eve", disabled=True)))
    await wait_for(lambda: every_answer_is(Code.UNAUTHENTICATED), what="eve refused on both apiservers")
    for api in (platform.api, second):
        await refused_login(api, "eve")
    listed = await platform.root.auth.ListUsers(accounts_pb2.ListUsersRequest(tenant_id="team-a"))
    assert [u.spec.disabled for u in listed.items if u.metadata.name == "eve"] == [True]

    # Enabled again through the second one: the key works again everywhere, the old token does not.
    root_on_second = Client(second, platform.root.token)
    await root_on_second.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=user("eve", disabled=False)))
    by_key = [c for c in clients if c.token == key.secret]
    by_token = [c for c in clients if c.token == eve.token]

    async def key_back() -> bool:
        return all([await answer(c) == Code.OK for c in by_key])

    await wait_for(key_back, what="eve's API key working again on both apiservers")
    for client in by_token:
        assert await answer(client) == Code.UNAUTHENTICATED
    await platform.login("eve", api=second)
