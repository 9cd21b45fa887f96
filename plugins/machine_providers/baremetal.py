"""The baremetal machine provider: joins the user's own machine to its cluster as a worker with
kubeadm over SSH, and drains, resets and removes it on delete.

Create: Preflight, PrepareNode (container runtime and kubeadm packages of the cluster's
version, from the cluster's install profile), JoinCluster (`kubeadm join` with token
discovery: a bootstrap token the platform creates with a TTL, and the pin of the cluster CA's
public key), WaitNodeReady and RecordNodeInfo (from the Node,
through the cluster's API). Delete: DrainNode (the Eviction API), ResetNode (`kubeadm reset`),
DeleteNode. Upgrade (one worker of a cluster at a time, once the control plane runs the new
version; the machine controller holds the cluster's upgrade slot around these steps):
DrainForUpgrade, UpgradeNodePackages (kubeadm package, `kubeadm upgrade node`, kubelet and
kubectl packages, kubelet restart), UncordonNode, WaitNodeUpgraded.
A joined machine carries a marker, so it never joins twice. Its host (spec.ip) cannot change once
the create steps began (validate_update): the delete resets the host at spec.ip.

The cluster may be of any provider that installs a control plane: with control-plane machines
the platform logs in to (baremetal: spec.machines), the token is made by `kubeadm token
create` on one of them; without (a hosted control plane, EC2 masters), it is stored through
the cluster's API, as `kubeadm token create` would store it.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightkube.resources.core_v1 import Node

from tke.internal.config.loader import from_dict
from tke.internal.provider import cluster_credentials, nodeprep, nodes
from tke.internal.provider import endpoint as endpoints
from tke.internal.provider.clusterapi import ClusterAPI, admin_access
from tke.internal.provider.contract import MachineContext
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube import node_status
from tke.internal.provider.ssh import Channel
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import machine_pb2


@dataclass
class MachineOptions:
    preflight_commands: Sequence[str] = ("uname -srm", 'test "$(id -u)" -eq 0 || sudo -n true')
    # Install profiles, as the baremetal cluster provider's (configure the same in both).
    profiles: dict[str, Any] = field(default_factory=dict)
    reset_commands: Sequence[str] = ("kubeadm reset -f", "rm -rf $TKE_CONFIG_DIR")
    command_timeout: float = 600.0
    bootstrap_token_ttl: float = 1800.0
    drain_timeout: float = 300.0
    # As the baremetal cluster provider's: a prefix of every path ("{ip}": the machine's
    # address), and the command printing the node name. Use the same values in both.
    root_dir: str = ""
    node_name_command: str = "hostname"

    def __post_init__(self) -> None:
        # Seconds that cannot work: a command given no time, a token dead before its join.
        bad = [n for n in ("command_timeout", "bootstrap_token_ttl", "drain_timeout") if getattr(self, n) <= 0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be a positive number of seconds")


class BaremetalMachineProvider:
    name = "baremetal"

    def __init__(self, **options: object) -> None:
        # Typed, as the cluster provider's options are.
        self.options = from_dict(MachineOptions, dict(options), "options")
        self.profiles = nodeprep.profiles_from(self.options.profiles)
        self.layout = nodes.Layout(self.options.root_dir)
        self.create_steps = [
            Step("Preflight", self.preflight, description="SSH to the machine and run the checks"),
            Step("PrepareNode", self.prepare, timeout=3600, description="container runtime and kubeadm packages"),
            Step("JoinCluster", self.join, timeout=3600, description="kubeadm join with a bootstrap token"),
            Step("WaitNodeReady", self.wait_ready, max_retries=120, description="the Node is Ready"),
            Step("RecordNodeInfo", self.record_node_info, description="status.node_info and addresses, from the Node"),
        ]
        self.delete_steps = [
            Step("DrainNode", self.drain, description="evict the node's pods (the Eviction API)"),
            Step("ResetNode", self.reset, description="kubeadm reset on the machine"),
            Step("DeleteNode", self.delete_node, description="delete the Node"),
        ]
        self.scale_steps: list[Step[MachineContext]] = []
        self.upgrade_steps = [
            Step("DrainForUpgrade", self.drain, description="evict the node's pods before its upgrade"),
            Step("UpgradeNodePackages", self.upgrade, timeout=3600, description="kubeadm upgrade node, the kubelet"),
            Step("UncordonNode", self.uncordon, description="schedulable again"),
            Step("WaitNodeUpgraded", self.wait_upgraded, max_retries=120, description="the kubelet runs the version"),
        ]

    def validate(self, machine: machine_pb2.Machine) -> list[FieldViolation]:
        if not machine.spec.ip:
            return [FieldViolation("machine.spec.ip", "is required")]
        if machine.spec.role == machine_pb2.MACHINE_ROLE_MASTER:
            return [
                FieldViolation(
                    "machine.spec.role", "control-plane machines of a baremetal cluster go in its spec.machines"
                )
            ]
        return []

    def validate_update(self, before: machine_pb2.Machine, after: machine_pb2.Machine) -> list[FieldViolation]:
        """The host (spec.ip) cannot change once the create steps began on it: the delete steps
        drain, reset and remove the machine at spec.ip, so a changed address would reset another
        host (the tenant's, through its credential) and leave the one installed joined to the
        cluster. The SSH port, user and credential may change (the same host, reached anew)."""
        if not before.status.conditions or before.spec.ip == after.spec.ip:
            return []
        return [
            FieldViolation(
                "machine.spec.ip",
                f"cannot change once the platform started installing the machine (it is {before.spec.ip}): "
                "its delete resets that host; to move to another host, delete the machine and create a new one",
            )
        ]

    def _paths(self, ctx: MachineContext) -> nodes.Paths:
        return self.layout.at(ctx.machine.spec.ip)

    def _env(self, ctx: MachineContext, name: str) -> dict[str, str]:
        return nodes.environment(
            ctx.cluster, self._paths(ctx), node_ip=ctx.machine.spec.ip, node_name=name, role="worker"
        )

    async def _name(self, ch: Channel) -> str:
        return await nodes.node_name(ch, self.options.node_name_command)

    def _profile(self, ctx: MachineContext) -> nodeprep.Profile:
        return nodeprep.choose(self.profiles, ctx.cluster.spec.install_profile, ctx.cluster.metadata.tenant_id)

    def _control_plane(self, ctx: MachineContext) -> Any:
        """An installed control-plane machine of the cluster (for kubeadm token create)."""
        wanted = {m.ip for m in ctx.cluster.spec.machines}
        for member in ctx.cluster.status.control_plane:
            if member.machine.ip in wanted:
                return member.machine
        raise TemporaryError(f"cluster {ctx.cluster.metadata.name} has no installed control-plane machine yet")

    @contextlib.asynccontextmanager
    async def _api(self, ctx: MachineContext) -> AsyncIterator[ClusterAPI]:
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        access = admin_access(endpoints.of(ctx.cluster).url, cas.ca, ctx.cluster.spec.version)
        async with ctx.tools.cluster_apis.connect(access) as api:
            yield api

    async def _node_name(self, ctx: MachineContext) -> str:
        recorded = [a.address for a in ctx.machine.status.addresses if a.type == "Hostname"]
        if recorded:
            return recorded[0]
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            return await self._name(ch)

    async def preflight(self, ctx: MachineContext) -> None:
        if not ctx.cluster.spec.machines and not ctx.cluster.status.control_plane_endpoint:
            raise PermanentError(f"cluster {ctx.cluster.metadata.name} has no control plane to join")
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            name = await self._name(ch)
            for command in self.options.preflight_commands:
                await ch.run(command, env=self._env(ctx, name), time_limit=60)

    async def prepare(self, ctx: MachineContext) -> None:
        paths = self._paths(ctx)
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            if await nodes.done_marker(ch, paths, "installed") is not None:
                return
            env = self._env(ctx, await self._name(ch))
            version = ctx.cluster.status.version or ctx.cluster.spec.version
            await nodes.prepare(
                ch, paths, self._profile(ctx), version=version, env=env, time_limit=self.options.command_timeout
            )

    async def join(self, ctx: MachineContext) -> None:
        paths = self._paths(ctx)
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            if await nodes.done_marker(ch, paths, "installed") is not None:
                return
            name = await self._name(ch)
            env = self._env(ctx, name)
            if await nodes.done_marker(ch, paths, "join-started") is not None:
                await ch.run("kubeadm reset -f", env=env, time_limit=self.options.command_timeout)
            token = await self._token(ctx, f"tke: join worker {ctx.machine.metadata.name}")
            m = ctx.machine
            taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in m.spec.taints]
            node = kubecfg.Node(name, m.spec.ip, dict(m.spec.labels), taints)
            if self._profile(ctx).swap == "kubelet":
                node = kubecfg.Node(name, m.spec.ip, dict(m.spec.labels), taints, ignore_preflight_errors=["Swap"])
            text = nodes.join_documents(ctx.cluster, node, token, cas.ca.pair.cert_pem, paths.pki_dir)
            config = posixpath.join(paths.config_dir, "kubeadm-join.yaml")
            await ch.write_file(config, text.encode(), 0o600)
            await nodes.mark_done(ch, paths, "join-started", ctx.cluster.spec.version)
            await ch.run(f"kubeadm join --config {config}", env=env, time_limit=self.options.command_timeout)
            await nodes.mark_done(ch, paths, "installed", ctx.cluster.spec.version)
            await nodes.clear_marker(ch, paths, "join-started")
            await ch.run(f"rm -f {config}")  # it holds a bootstrap token

    async def _token(self, ctx: MachineContext, description: str) -> str:
        token = nodes.new_bootstrap_token()
        if not ctx.cluster.spec.machines:  # no master to log in to: through the API
            async with self._api(ctx) as api:
                await api.create_bootstrap_token(token, self.options.bootstrap_token_ttl, description)
            return token
        master = self._control_plane(ctx)
        paths = self.layout.at(master.ip)
        async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
            name = await self._name(ch)
            env = nodes.environment(ctx.cluster, paths, node_ip=master.ip, node_name=name, role="master")
            await nodes.create_bootstrap_token(ch, env, token, self.options.bootstrap_token_ttl, description)
        return token

    async def _node(self, ctx: MachineContext) -> Node:
        name = await self._node_name(ctx)
        async with self._api(ctx) as api:
            node = await api.node(name)
        if node is None:
            raise TemporaryError(f"node {name} is not registered yet", delay=5.0)
        return node

    async def wait_ready(self, ctx: MachineContext) -> None:
        report = node_status.report(await self._node(ctx))
        if not report.ready:
            raise TemporaryError(f"node {report.name} is not Ready yet: {report.ready_reason}", delay=5.0)

    async def record_node_info(self, ctx: MachineContext) -> None:
        node_status.write_machine_status(await self._node(ctx), ctx.obj.status)

    def _joined(self, ctx: MachineContext) -> bool:
        """Whether the cluster has a control plane the node may be registered with."""
        if not ctx.cluster.spec.machines:
            return bool(ctx.cluster.status.control_plane_endpoint)
        return bool(ctx.cluster.status.control_plane)

    async def drain(self, ctx: MachineContext) -> None:
        if not self._joined(ctx):
            return  # no control plane: nothing to drain from
        name = await self._node_name(ctx)
        async with self._api(ctx) as api:
            await api.drain(name, self.options.drain_timeout)

    async def reset(self, ctx: MachineContext) -> None:
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            env = self._env(ctx, await self._name(ch))
            await nodes.run_all(ch, self.options.reset_commands, env, self.options.command_timeout)
            await nodes.clear_marker(ch, self._paths(ctx), "installed", "prepared", "join-started")

    async def delete_node(self, ctx: MachineContext) -> None:
        if not self._joined(ctx):
            return
        name = await self._node_name(ctx)
        async with self._api(ctx) as api:
            await api.delete_node(name)

    async def upgrade(self, ctx: MachineContext) -> None:
        version = ctx.cluster.status.version.lstrip("v")
        paths = self._paths(ctx)
        profile = self._profile(ctx)
        limit = self.options.command_timeout
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            if await nodes.done_marker(ch, paths, "installed") == version:
                return
            env = self._env(ctx, await self._name(ch))
            env["TKE_VERSION"] = version
            await nodes.upgrade_kubeadm(ch, paths, profile, version=version, env=env, time_limit=limit)
            await ch.run("kubeadm upgrade node", env=env, time_limit=limit)
            await nodes.upgrade_kubelet(ch, paths, profile, version=version, env=env, time_limit=limit)
            await nodes.mark_done(ch, paths, "installed", version)

    async def uncordon(self, ctx: MachineContext) -> None:
        name = await self._node_name(ctx)
        async with self._api(ctx) as api:
            await api.uncordon(name)

    async def wait_upgraded(self, ctx: MachineContext) -> None:
        node = await self._node(ctx)
        report = node_status.report(node)
        want = ctx.cluster.status.version.lstrip("v")
        if report.kubelet_version.lstrip("v") != want or not report.ready:
            raise TemporaryError(
                f"node {report.name} runs kubelet {report.kubelet_version}, waiting for v{want}", delay=5
            )
        node_status.write_machine_status(node, ctx.obj.status)

    async def check_health(self, ctx: MachineContext) -> str:
        """The Node's state, written to the machine's status (node info, addresses, Node
        conditions); unhealthy while the Node is not Ready."""
        report = node_status.write_machine_status(await self._node(ctx), ctx.obj.status)
        if not report.ready:
            raise TemporaryError(f"node {report.name} is not Ready: {report.ready_reason}")
        return report.summary
