"""The auth chain against the real apiserver and etcd: built-in accounts (login, tokens,
revocation, API keys), the policy centre, audit, and their failure paths, unary and streaming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.auth_plugins import MemorySink
from tests.support.rpc import expect_error, next_message
from tests.support.tools import grpcurl as grpcurl_path
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc, policy_pb2, policy_pb2_grpc
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.auth.tokens import TokenSigner
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

Code = grpc.StatusCode
SECRET = "s" * 40
ADMIN_PASSWORD = "correct horse battery staple"


@pytest.fixture
async def secured(etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    monkeypatch.setenv("TKE_TEST_SECRET", SECRET)
    monkeypatch.setenv("TKE_TEST_ADMIN_PASSWORD", ADMIN_PASSWORD)
    auth = AuthConfig(
        authenticators=[
            PluginConfig(
                "accounts",
                {
                    "secret_env": "TKE_TEST_SECRET",
                    "bootstrap_admin": "root",
                    "bootstrap_password_env": "TKE_TEST_ADMIN_PASSWORD",
                },
            )
        ],
        authorizers=[PluginConfig("policy")],
        audit=[
            PluginConfig("jsonl-file", {"path": str(tmp_path / "audit.jsonl")}),
            PluginConfig("tests.support.auth_plugins:MemorySink"),
        ],
    )
    running = await start(replace(local_config(etcd_config), auth=auth))
    try:
        yield running
    finally:
        await stop(running)


class Client:
    def __init__(self, api: Running, token: str) -> None:
        channel = grpc.aio.secure_channel(
            api.address,
            grpc.composite_channel_credentials(
                grpc.local_channel_credentials(), grpc.access_token_call_credentials(token)
            ),
        )
        api.extra_channels.append(channel)
        self.token = token
        self.clusters = cluster_pb2_grpc.ClusterServiceStub(channel)
        self.auth = accounts_pb2_grpc.AuthServiceStub(channel)
        self.policy = policy_pb2_grpc.PolicyServiceStub(channel)


async def login(api: Running, user: str, password: str) -> Client:
    resp = await accounts_pb2_grpc.AuthServiceStub(api.channel).Login(
        accounts_pb2.LoginRequest(username=user, password=password)
    )
    assert resp.token.startswith("tke1.") and resp.expires_at.seconds > 0
    return Client(api, resp.token)


async def add_user(admin: Client, name: str, tenant: str, password: str = "a long enough password") -> None:
    user = accounts_pb2.User()
    user.metadata.name = name
    user.metadata.tenant_id = tenant
    await admin.auth.CreateUser(accounts_pb2.CreateUserRequest(user=user, password=password))


async def bind(admin: Client, tenant: str, role: str, user: str) -> None:
    binding = policy_pb2.RoleBinding()
    binding.metadata.name = f"{user}-{role}"
    binding.metadata.tenant_id = tenant
    binding.spec.role = role
    binding.spec.subjects.add(kind="User", name=user)
    await admin.policy.CreateRoleBinding(policy_pb2.CreateRoleBindingRequest(role_binding=binding))


async def eventually(call: object, code: grpc.StatusCode | None = None) -> None:
    """Policy changes reach the authorizer through a watch: retry until they have."""

    async def reached() -> bool:
        try:
            await call()  # type: ignore[operator]
        except grpc.aio.AioRpcError as err:
            return code is not None and err.code() == code
        return code is None

    await wait_for(reached, what=f"the call ending in {code.name if code else 'OK'}")


async def test_login_and_bootstrap_admin(secured: Running) -> None:
    await expect_error(
        accounts_pb2_grpc.AuthServiceStub(secured.channel).Login(
            accounts_pb2.LoginRequest(username="root", password="wrong password!")
        ),
        Code.UNAUTHENTICATED,
    )
    await expect_error(
        accounts_pb2_grpc.AuthServiceStub(secured.channel).Login(
            accounts_pb2.LoginRequest(username="nobody", password="wrong password!")
        ),
        Code.UNAUTHENTICATED,
    )
    admin = await login(secured, "root", ADMIN_PASSWORD)
    created = await admin.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1")))
    assert created.metadata.tenant_id == "default"


async def test_roles_and_bindings_decide_per_tenant(secured: Running) -> None:
    admin = await login(secured, "root", ADMIN_PASSWORD)
    await add_user(admin, "alice", "team-a")
    alice = await login(secured, "alice", "a long enough password")
    err = await expect_error(alice.clusters.List(cluster_pb2.ListClustersRequest()), Code.PERMISSION_DENIED)
    assert "no role binding" in (err.details() or "")
    watch = alice.clusters.Watch(cluster_pb2.WatchClustersRequest())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await watch.read()
    assert info.value.code() == Code.PERMISSION_DENIED
    await bind(admin, "team-a", "viewer", "alice")
    await eventually(lambda: alice.clusters.List(cluster_pb2.ListClustersRequest()))
    await expect_error(
        alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("x"))), Code.PERMISSION_DENIED
    )
    watch = alice.clusters.Watch(cluster_pb2.WatchClustersRequest())
    assert (await next_message(watch)).type  # the initial bookmark: streaming is allowed now
    watch.cancel()
    # A custom role limited to one cluster name.
    role = policy_pb2.Role()
    role.metadata.name = "one-cluster"
    role.metadata.tenant_id = "team-a"
    role.spec.rules.add(verbs=["create", "update", "delete"], resources=["clusters"], resource_names=["mine"])
    await admin.policy.CreateRole(policy_pb2.CreateRoleRequest(role=role))
    await bind(admin, "team-a", "one-cluster", "alice")
    await eventually(lambda: alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("mine"))))
    await expect_error(
        alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("other"))), Code.PERMISSION_DENIED
    )
    # Alice's roles are in team-a only: she cannot even name another tenant.
    await expect_error(
        alice.clusters.List(cluster_pb2.ListClustersRequest(tenant_id="default")), Code.PERMISSION_DENIED
    )
    # The authorizer keeps its decisions until a role or binding changes: the same call asked
    # again after a change is decided again, both ways.
    stored = await admin.policy.GetRole(policy_pb2.GetRoleRequest(name="one-cluster", tenant_id="team-a"))
    stored.spec.rules[0].resource_names.append("other")
    await admin.policy.UpdateRole(policy_pb2.UpdateRoleRequest(role=stored))
    await eventually(lambda: alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("other"))))
    await admin.policy.DeleteRoleBinding(policy_pb2.DeleteRoleBindingRequest(name="alice-viewer", tenant_id="team-a"))
    await eventually(lambda: alice.clusters.List(cluster_pb2.ListClustersRequest()), Code.PERMISSION_DENIED)
    await bind(admin, "team-a", "viewer", "alice")
    await eventually(lambda: alice.clusters.List(cluster_pb2.ListClustersRequest()))
    # Only admins manage policy.
    await expect_error(alice.policy.CreateRole(policy_pb2.CreateRoleRequest(role=role)), Code.PERMISSION_DENIED)
    bad = policy_pb2.Role()
    bad.metadata.name = "bad"
    bad.spec.rules.add(verbs=["fly"], resources=["clusters"])
    await expect_error(admin.policy.CreateRole(policy_pb2.CreateRoleRequest(role=bad)), Code.INVALID_ARGUMENT)


async def test_expired_forged_revoked_and_stale_tokens_are_refused(secured: Running) -> None:
    admin = await login(secured, "root", ADMIN_PASSWORD)
    await add_user(admin, "bob", "default")
    await bind(admin, "default", "viewer", "bob")
    bob = await login(secured, "bob", "a long enough password")
    await eventually(lambda: bob.clusters.List(cluster_pb2.ListClustersRequest()))
    signer = TokenSigner(SECRET.encode())
    expired, _ = signer.issue("bob", "", 60, now=0)
    forged = bob.token[:-4] + ("AAAA" if not bob.token.endswith("AAAA") else "BBBB")
    other_key, _ = TokenSigner(b"x" * 40).issue("bob", "", 600)
    for token, why in ((expired, "expired"), (forged, "signature"), (other_key, "signature")):
        err = await expect_error(
            Client(secured, token).clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED
        )
        assert why in (err.details() or "")
    # Logout revokes the token on every apiserver sharing the store.
    await bob.auth.Logout(accounts_pb2.LogoutRequest())
    await eventually(lambda: bob.clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED)
    # A password change ends older tokens.
    bob2 = await login(secured, "bob", "a long enough password")
    await bob2.auth.ChangePassword(
        accounts_pb2.ChangePasswordRequest(old_password="a long enough password", new_password="another long password")
    )
    await expect_error(bob2.clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED)
    bob3 = await login(secured, "bob", "another long password")
    await bob3.clusters.List(cluster_pb2.ListClustersRequest())
    # Deleting the user ends everything.
    await admin.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name="bob"))
    await expect_error(bob3.clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED)


async def test_api_keys(secured: Running) -> None:
    admin = await login(secured, "root", ADMIN_PASSWORD)
    await add_user(admin, "robot", "default")
    await bind(admin, "default", "editor", "robot")
    robot = await login(secured, "robot", "a long enough password")
    created = await robot.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(description="ci"))
    assert created.secret.startswith("tkeak.") and created.key.user == "robot"
    machine = Client(secured, created.secret)
    await eventually(lambda: machine.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("by-key"))))
    listed = await robot.auth.ListAPIKeys(accounts_pb2.ListAPIKeysRequest())
    assert [k.id for k in listed.keys] == [created.key.id]
    assert created.secret not in str(listed)
    # Another user cannot delete robot's key.
    await add_user(admin, "eve", "default")
    eve = await login(secured, "eve", "a long enough password")
    await expect_error(
        eve.auth.DeleteAPIKey(accounts_pb2.DeleteAPIKeyRequest(id=created.key.id)), Code.PERMISSION_DENIED
    )
    await robot.auth.DeleteAPIKey(accounts_pb2.DeleteAPIKeyRequest(id=created.key.id))
    await expect_error(machine.clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED)
    wrong = created.secret[:-3] + "xyz"
    await expect_error(Client(secured, wrong).clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED)


async def test_every_call_is_audited_without_secrets(
    secured: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    admin = await login(secured, "root", ADMIN_PASSWORD)
    await admin.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("audited")))
    await expect_error(
        Client(secured, "garbage").clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED
    )
    await add_user(admin, "mallory", "default")
    mallory = await login(secured, "mallory", "a long enough password")
    await expect_error(
        mallory.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="audited")), Code.PERMISSION_DENIED
    )
    expected = {
        ("Login", "open", "OK"),
        ("Create", "allow", "OK"),
        ("List", "unauthenticated", "UNAUTHENTICATED"),
        ("Delete", "deny", "PERMISSION_DENIED"),
    }

    def written() -> list[dict[str, Any]] | None:
        """Sinks write in the background: the file's events once both sinks have them all."""
        path = tmp_path / "audit.jsonl"
        text = path.read_text() if path.exists() else ""
        events = [json.loads(line) for line in text.splitlines()] if text.endswith("\n") else []
        by = {(e["method"].rsplit("/", 1)[-1], e["decision"], e["code"]) for e in events}
        return events if expected <= by and len(MemorySink.events) == len(events) else None

    events = await wait_for(written, what="the audit sinks writing every call")
    text = (tmp_path / "audit.jsonl").read_text()
    create = next(e for e in events if e["method"].endswith("ClusterService/Create"))
    assert create["user"] == "root" and create["resource"] == "clusters" and create["name"] == "audited"
    assert create["request_id"] and create["latency_ms"] >= 0
    for secret in (admin.token, mallory.token, ADMIN_PASSWORD, "a long enough password", SECRET):
        assert secret not in text
        assert secret not in caplog.text
    assert len(MemorySink.events) == len(events)


async def test_a_failing_or_stalled_audit_sink_never_fails_requests(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("t0,admin,u0,tke:platform-admins,default\n")
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})],
        authorizers=[PluginConfig("policy")],
        audit=[
            PluginConfig("tests.support.auth_plugins:FailingSink"),
            PluginConfig("tests.support.auth_plugins:StalledSink"),
        ],
        audit_queue=5,
    )
    api = await start(replace(local_config(etcd_config), auth=auth))
    try:
        client = Client(api, "t0")
        for i in range(20):
            await asyncio.wait_for(
                client.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(f"n{i}"))), 30
            )
        await wait_for(lambda: api.apiserver.auth.auditor.dropped > 0, what="the full audit queue dropping")
    finally:
        await stop(api)


async def test_reflection_needs_credentials_unless_opened(secured: Running) -> None:
    grpcurl = grpcurl_path()
    proc = await asyncio.create_subprocess_exec(
        grpcurl, "-plaintext", secured.address, "list", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode != 0 and b"Unauthenticated" in err
