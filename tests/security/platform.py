"""The platform as the security suite attacks it: in-process apiservers with the private cloud's
auth plugins (built-in accounts, policy centre, a JSON-lines audit file) over the session's etcd,
and clients logged in as the users a probe needs: platform administrators, tenant admins,
members with a narrow role, users of another tenant."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from tests.support.apiserver import Running, local_config, start, stop
from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc, policy_pb2, policy_pb2_grpc
from tke.internal.apiserver.app import ApiserverConfig
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2_grpc, event_pb2_grpc, machine_pb2_grpc, quota_pb2_grpc

SECRET_ENV = "TKE_SECURITY_SECRET"
ROOT_PASSWORD_ENV = "TKE_SECURITY_ROOT_PASSWORD"
SECRET = "k" * 40
ROOT = "root"  # the bootstrap platform administrator, in tenant "default"
ROOT_PASSWORD = "the root password of the suite"
PASSWORD = "a long enough password"

Code = grpc.StatusCode


def environment() -> dict[str, str]:
    """What the accounts plugin reads at start."""
    return {SECRET_ENV: SECRET, ROOT_PASSWORD_ENV: ROOT_PASSWORD}


def private_cloud(etcd_config: EtcdConfig, audit: Path, **accounts_options: Any) -> ApiserverConfig:
    """deploy/private-cloud's auth, on loopback: accounts, policy centre, audit file."""
    options = {"secret_env": SECRET_ENV, "bootstrap_admin": ROOT, "bootstrap_password_env": ROOT_PASSWORD_ENV}
    auth = AuthConfig(
        authenticators=[PluginConfig("accounts", options | accounts_options)],
        authorizers=[PluginConfig("policy")],
        audit=[PluginConfig("jsonl-file", {"path": str(audit)})],
    )
    return replace(local_config(etcd_config), auth=auth)


class Client:
    """Stubs of every apiserver service, sending one user's token."""

    def __init__(self, api: Running, token: str, name: str = "") -> None:
        channel = grpc.aio.secure_channel(
            api.address,
            grpc.composite_channel_credentials(
                grpc.local_channel_credentials(), grpc.access_token_call_credentials(token)
            ),
        )
        api.extra_channels.append(channel)
        self.name = name
        self.token = token
        self.clusters = cluster_pb2_grpc.ClusterServiceStub(channel)
        self.machines = machine_pb2_grpc.MachineServiceStub(channel)
        self.events = event_pb2_grpc.EventServiceStub(channel)
        self.auth = accounts_pb2_grpc.AuthServiceStub(channel)
        self.policy = policy_pb2_grpc.PolicyServiceStub(channel)
        self.quotas = quota_pb2_grpc.QuotaServiceStub(channel)


def user(name: str, tenant: str = "", groups: Iterable[str] = (), disabled: bool = False) -> accounts_pb2.User:
    u = accounts_pb2.User()
    u.metadata.name = name
    u.metadata.tenant_id = tenant
    u.spec.groups.extend(groups)
    u.spec.disabled = disabled
    return u


def binding(
    name: str,
    tenant: str,
    role: str,
    *,
    users: Iterable[str] = (),
    groups: Iterable[str] = (),
    all_tenants: bool = False,
) -> policy_pb2.RoleBinding:
    b = policy_pb2.RoleBinding()
    b.metadata.name = name
    b.metadata.tenant_id = tenant
    b.spec.role = role
    b.spec.all_tenants = all_tenants
    for u in users:
        b.spec.subjects.add(kind="User", name=u)
    for g in groups:
        b.spec.subjects.add(kind="Group", name=g)
    return b


def role(name: str, tenant: str, *rules: tuple[list[str], list[str]]) -> policy_pb2.Role:
    r = policy_pb2.Role()
    r.metadata.name = name
    r.metadata.tenant_id = tenant
    for verbs, resources in rules:
        r.spec.rules.add(verbs=verbs, resources=resources)
    return r


@dataclass
class Platform:
    """One apiserver (or several sharing etcd) and the root administrator's client."""

    api: Running
    root: Client
    audit: Path
    others: list[Running] = field(default_factory=list)

    async def login(self, name: str, password: str = PASSWORD, api: Running | None = None) -> Client:
        target = api or self.api
        resp = await accounts_pb2_grpc.AuthServiceStub(target.channel).Login(
            accounts_pb2.LoginRequest(username=name, password=password)
        )
        return Client(target, resp.token, name)

    async def add_user(self, name: str, tenant: str, groups: Iterable[str] = (), disabled: bool = False) -> None:
        await self.root.auth.CreateUser(
            accounts_pb2.CreateUserRequest(user=user(name, tenant, groups, disabled), password=PASSWORD)
        )

    async def bind(self, b: policy_pb2.RoleBinding) -> policy_pb2.RoleBinding:
        """As root; the apiserver answers once its authorizer decides with it."""
        return await self.root.policy.CreateRoleBinding(policy_pb2.CreateRoleBindingRequest(role_binding=b))

    async def member(
        self, name: str, tenant: str, role_name: str = "", groups: Iterable[str] = (), where: str = ""
    ) -> Client:
        """A user of `tenant`, bound to `role_name` in `where` (default: its own tenant), logged in."""
        await self.add_user(name, tenant, groups)
        if role_name:
            await self.bind(binding(f"{name}-{role_name}", where or tenant, role_name, users=[name]))
        return await self.login(name)

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit file's complete lines."""
        text = self.audit.read_text() if self.audit.exists() else ""
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


async def start_platform(config: ApiserverConfig, audit: Path) -> Platform:
    api = await start(config)
    try:
        resp = await accounts_pb2_grpc.AuthServiceStub(api.channel).Login(
            accounts_pb2.LoginRequest(username=ROOT, password=ROOT_PASSWORD)
        )
    except BaseException:
        await stop(api)
        raise
    return Platform(api, Client(api, resp.token, ROOT), audit)


async def stop_platform(platform: Platform) -> None:
    for api in [platform.api, *platform.others]:
        await stop(api)
