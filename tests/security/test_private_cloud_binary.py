"""The takeover the hardening started from, against the tke-apiserver binary run with the
private-cloud profile (deploy/private-cloud/apiserver.toml, only its addresses and paths moved
to this test's loopback servers), over TLS, as an attacker would meet it in production: a tenant
admin tries to take over a platform administrator living in its tenant, to escape its tenant,
and to guess a password; each is refused with the right code, and its own work goes on."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from google.rpc import error_details_pb2

from tests.deploy.test_profiles import point_at_test, profile, running, secure_channel
from tests.support.etcd import EtcdProcess
from tests.support.pki import TestCA
from tests.support.ports import free_port
from tests.support.rpc import detail_of, expect_error
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc, policy_pb2, policy_pb2_grpc
from tke.internal.auth.identity import PLATFORM_ADMINS
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

Code = grpc.StatusCode
ADMIN_PASSWORD = "first admin password"
PASSWORD = "a long enough password"


async def test_a_tenant_admin_cannot_take_over_the_platform(etcd: EtcdProcess, tmp_path: Path) -> None:
    config = profile("private-cloud")
    port = free_port()
    ca = TestCA(tmp_path / "pki")
    point_at_test(config, tmp_path, etcd, port, ca)
    env = {"TKE_TOKEN_SECRET": "p" * 40, "TKE_ADMIN_PASSWORD": ADMIN_PASSWORD}
    async with running(config, tmp_path, env), secure_channel(ca, port) as channel:
        auth = accounts_pb2_grpc.AuthServiceStub(channel)
        policy = policy_pb2_grpc.PolicyServiceStub(channel)
        clusters = cluster_pb2_grpc.ClusterServiceStub(channel)

        async def login(name: str, password: str = PASSWORD) -> list[tuple[str, str]]:
            resp = await auth.Login(
                accounts_pb2.LoginRequest(username=name, password=password), wait_for_ready=True, timeout=30
            )
            return [("authorization", f"Bearer {resp.token}")]

        admin = await login("admin", ADMIN_PASSWORD)
        for name, groups in (("ann", []), ("ops", [PLATFORM_ADMINS])):
            u = accounts_pb2.User()
            u.metadata.name, u.metadata.tenant_id = name, "team-a"
            u.spec.groups.extend(groups)
            await auth.CreateUser(accounts_pb2.CreateUserRequest(user=u, password=PASSWORD), metadata=admin)
        b = policy_pb2.RoleBinding()
        b.metadata.name, b.metadata.tenant_id = "ann-admin", "team-a"
        b.spec.role = "admin"
        b.spec.subjects.add(kind="User", name="ann")
        await policy.CreateRoleBinding(policy_pb2.CreateRoleBindingRequest(role_binding=b), metadata=admin)
        ann = await login("ann")

        # The takeover: an API key for, or a new password of, the platform admin of her tenant.
        for call in (
            auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(user="ops"), metadata=ann),
            auth.ChangePassword(accounts_pb2.ChangePasswordRequest(name="ops", new_password="p" * 20), metadata=ann),
        ):
            err = await expect_error(call, Code.PERMISSION_DENIED)
            assert detail_of(err, error_details_pb2.ErrorInfo).reason == "PRIVILEGE_ESCALATION"
        await login("ops")  # its password is still its own
        # Making herself an admin of every tenant.
        b.spec.all_tenants = True
        await expect_error(
            policy.UpdateRoleBinding(policy_pb2.UpdateRoleBindingRequest(role_binding=b), metadata=ann),
            Code.PERMISSION_DENIED,
        )
        # The bootstrap admin and another tenant's objects do not exist for her.
        await expect_error(
            auth.ChangePassword(accounts_pb2.ChangePasswordRequest(name="admin", new_password="p" * 20), metadata=ann),
            Code.NOT_FOUND,
        )
        await expect_error(
            clusters.Delete(cluster_pb2.DeleteClusterRequest(name="prod", tenant_id="default"), metadata=ann),
            Code.NOT_FOUND,
        )
        # Guessing ops' password: the default limit is 5 failures at once, then one every 10 s.
        codes: list[grpc.StatusCode] = []
        while Code.RESOURCE_EXHAUSTED not in codes and len(codes) < 15:
            try:
                await auth.Login(accounts_pb2.LoginRequest(username="ops", password="guess " * 3))
            except grpc.aio.AioRpcError as e:
                codes.append(e.code())
                if e.code() == Code.RESOURCE_EXHAUSTED:
                    assert detail_of(e, error_details_pb2.RetryInfo).retry_delay.seconds <= 10
        assert codes[:5] == [Code.UNAUTHENTICATED] * 5 and codes[-1] == Code.RESOURCE_EXHAUSTED, codes
        # Her own work goes on.
        c = cluster_pb2.Cluster()
        c.metadata.name = "mine"
        c.spec.type, c.spec.version = "baremetal", "1.30.2"
        c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
        created = await clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c), metadata=ann)
        assert created.metadata.tenant_id == "team-a"

    def failed_logins() -> list[str] | None:
        lines = (tmp_path / "audit.jsonl").read_text().splitlines()
        events = [json.loads(line) for line in lines]
        names = [e["name"] for e in events if e["method"].endswith("/Login") and e["code"] != "OK"]
        return names if len(names) >= len(codes) else None

    assert set(await wait_for(failed_logins, what="the failed logins in the audit file")) == {"ops"}
