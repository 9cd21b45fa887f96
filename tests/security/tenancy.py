"""Tenants for the security tests: a platform administrator and one admin each of tenants
team-a and team-b, with static tokens (the `token-file` authenticator) and the policy centre
(`policy` authorizer) granting each tenant admin the built-in `admin` role in its own tenant
only, as a platform administrator would through PolicyService. An apiserver started with
`auth_config` serves them; tke-ipamd's [tcp.auth] takes the same plugins."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from tests.support.apiserver import Running, local_config, start
from tests.support.waiting import wait_for
from tke.auth.v1 import policy_pb2, policy_pb2_grpc
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc, machine_pb2_grpc


@dataclass(frozen=True)
class Caller:
    name: str
    token: str
    tenant: str


ROOT = Caller("root", "root-token-0123456789", "default")
ALICE = Caller("alice", "alice-token-0123456789", "team-a")
BOB = Caller("bob", "bob-token-0123456789", "team-b")


def tokens_file(directory: Path) -> Path:
    """The token-file authenticator's file: root is a platform administrator."""
    path = directory / "tokens.csv"
    path.write_text(
        f"{ROOT.token},root,u-root,tke:platform-admins,{ROOT.tenant}\n"
        f"{ALICE.token},alice,u-alice,,{ALICE.tenant}\n"
        f"{BOB.token},bob,u-bob,,{BOB.tenant}\n"
    )
    return path


def auth_config(directory: Path) -> AuthConfig:
    return AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens_file(directory))})],
        authorizers=[PluginConfig("policy")],
    )


def metadata(caller: Caller) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {caller.token}"),)


@dataclass
class Api:
    """Stubs of the apiserver that send a caller's token."""

    clusters: cluster_pb2_grpc.ClusterServiceAsyncStub
    machines: machine_pb2_grpc.MachineServiceAsyncStub
    policy: policy_pb2_grpc.PolicyServiceAsyncStub


def api_of(running: Running, caller: Caller) -> Api:
    creds = grpc.composite_channel_credentials(
        grpc.local_channel_credentials(), grpc.access_token_call_credentials(caller.token)
    )
    channel = grpc.aio.secure_channel(running.address, creds)
    running.extra_channels.append(channel)
    return Api(
        cluster_pb2_grpc.ClusterServiceStub(channel),
        machine_pb2_grpc.MachineServiceStub(channel),
        policy_pb2_grpc.PolicyServiceStub(channel),
    )


async def grant_tenant_admins(root: Api, own: Api, caller: Caller) -> None:
    """root binds `admin` in the caller's tenant to the caller; returns once the policy
    centre (fed by a watch) lets the caller list its tenant."""
    binding = policy_pb2.RoleBinding()
    binding.metadata.name = f"{caller.name}-admin"
    binding.metadata.tenant_id = caller.tenant
    binding.spec.role = "admin"
    binding.spec.subjects.add(kind="User", name=caller.name)
    await root.policy.CreateRoleBinding(policy_pb2.CreateRoleBindingRequest(role_binding=binding))

    async def allowed() -> bool:
        try:
            await own.clusters.List(cluster_pb2.ListClustersRequest())
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
            return False
        return True

    await wait_for(allowed, what=f"{caller.name}'s role binding taking effect")


async def start_secured(etcd_config: EtcdConfig, directory: Path) -> Running:
    """An apiserver with the tenants above, each tenant admin already granted."""
    running = await start(replace(local_config(etcd_config), auth=auth_config(directory)))
    root = api_of(running, ROOT)
    for caller in (ALICE, BOB):
        await grant_tenant_admins(root, api_of(running, caller), caller)
    return running
