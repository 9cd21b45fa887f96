"""The baremetal machine provider: joins the user's own machine to its cluster over SSH, and
drains and removes it on delete.

The platform writes the node's credentials and configuration (the cluster CA, a kubelet
kubeconfig with a client certificate for system:node:<hostname>, kubelet and kubeadm join
configuration); the operator's `join_commands` start the kubelet. Draining runs
`drain_commands` on the cluster's first control-plane machine (where kubectl and admin.conf
are), then `reset_commands` on the machine itself. A joined machine carries a marker, so
join commands never run twice on it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from tke.internal.provider import nodes
from tke.internal.provider.contract import MachineContext
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube import kubeconfig
from tke.internal.provider.ssh import Channel
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import machine_pb2

KUBECTL = "kubectl --kubeconfig $TKE_CONFIG_DIR/admin.conf"


@dataclass
class MachineOptions:
    preflight_commands: Sequence[str] = ("uname -srm", 'test "$(id -u)" -eq 0 || sudo -n true')
    join_commands: Sequence[str] = ("kubeadm join --config $TKE_CONFIG_DIR/kubeadm-join.yaml --skip-phases=preflight",)
    health_command: str = "systemctl is-active --quiet kubelet"
    drain_commands: Sequence[str] = (
        f"{KUBECTL} drain $TKE_NODE_NAME --ignore-daemonsets --delete-emptydir-data --force --timeout=300s",
        f"{KUBECTL} delete node $TKE_NODE_NAME --ignore-not-found",
    )
    reset_commands: Sequence[str] = ("kubeadm reset -f", "rm -rf $TKE_CONFIG_DIR")
    upgrade_commands: Sequence[str] = ("kubeadm upgrade node",)
    command_timeout: float = 600.0
    # As the baremetal cluster provider's: a prefix of every path ("{ip}": the machine's
    # address), and the command printing the node name. Use the same values in both.
    root_dir: str = ""
    node_name_command: str = "hostname"


class BaremetalMachineProvider:
    name = "baremetal"

    def __init__(self, **options: object) -> None:
        self.options = MachineOptions(**options)  # type: ignore[arg-type]
        self.layout = nodes.Layout(self.options.root_dir)
        self.create_steps = [
            Step("Preflight", self.preflight, description="SSH to the machine and run the checks"),
            Step("WriteNodeCredentials", self.write_credentials, description="cluster CA and kubelet kubeconfig"),
            Step("WriteNodeConfiguration", self.write_configuration, description="kubelet and join configuration"),
            Step("JoinCluster", self.join, timeout=3600, description="the operator's join commands"),
            Step("WaitNodeReady", self.wait_ready, max_retries=60, description="the node's health check passes"),
            Step("RecordNodeInfo", self.record_node_info, description="status.node_info and addresses"),
        ]
        self.delete_steps = [
            Step("DrainNode", self.drain, description="drain and delete the node, from the control plane"),
            Step("ResetNode", self.reset, description="the operator's reset commands on the machine"),
        ]
        self.scale_steps: list[Step[MachineContext]] = []
        self.upgrade_steps = [Step("UpgradeNode", self.upgrade, timeout=3600, description="upgrade the kubelet")]

    def validate(self, machine: machine_pb2.Machine) -> list[FieldViolation]:
        if not machine.spec.ip:
            return [FieldViolation("machine.spec.ip", "is required")]
        return []

    def _paths(self, ctx: MachineContext) -> nodes.Paths:
        return self.layout.at(ctx.machine.spec.ip)

    def _env(self, ctx: MachineContext, name: str, paths: nodes.Paths | None = None) -> dict[str, str]:
        role = "master" if ctx.machine.spec.role == machine_pb2.MACHINE_ROLE_MASTER else "worker"
        paths = paths or self._paths(ctx)
        return nodes.environment(ctx.cluster, paths, node_ip=ctx.machine.spec.ip, node_name=name, role=role)

    async def _name(self, ch: Channel) -> str:
        return await nodes.node_name(ch, self.options.node_name_command)

    async def preflight(self, ctx: MachineContext) -> None:
        if not ctx.cluster.spec.machines:
            raise PermanentError(f"cluster {ctx.cluster.metadata.name} has no control-plane machines to join")
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            name = await self._name(ch)
            for command in self.options.preflight_commands:
                await ch.run(command, env=self._env(ctx, name), time_limit=60)

    async def write_credentials(self, ctx: MachineContext) -> None:
        first = nodes.first_master(ctx.cluster)
        async with ctx.tools.dialer.connect(nodes.master_target(first)) as master:
            cas = await nodes.read_cas(master, self.layout.at(first.ip))
        if cas is None:
            raise TemporaryError("the cluster CA is not on the control plane yet")
        server = nodes.endpoint(ctx.cluster)
        paths = self._paths(ctx)
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            path = posixpath.join(paths.config_dir, "kubelet.conf")
            try:
                if kubeconfig.ca_of((await ch.read_file(path)).decode()) == cas.ca.pair.cert_pem:
                    return
            except FileNotFoundError:
                pass
            name = await self._name(ch)
            node_conf = kubeconfig.node_kubeconfig(cas.ca, ctx.cluster.metadata.name, server, name)
            await ch.write_file(posixpath.join(paths.pki_dir, "ca.crt"), cas.ca.pair.cert_pem, 0o644)
            await ch.write_file(posixpath.join(paths.config_dir, "bootstrap-kubelet.conf"), node_conf, 0o600)
            await ch.write_file(path, node_conf, 0o600)

    async def write_configuration(self, ctx: MachineContext) -> None:
        m = ctx.machine
        taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in m.spec.taints]
        paths = self._paths(ctx)
        async with ctx.tools.dialer.connect(nodes.machine_target(m)) as ch:
            name = await self._name(ch)
            api = nodes.endpoint(ctx.cluster).removeprefix("https://")
            join = kubecfg.join_configuration(
                name, m.spec.ip, ctx.cluster, api, labels=dict(m.spec.labels), taints=taints
            )
            kubelet_config = kubecfg.kubelet_configuration(ctx.cluster, paths.pki_dir)
            text = kubecfg.documents(join, kubelet_config)
            await ch.write_file(posixpath.join(paths.config_dir, "kubeadm-join.yaml"), text.encode(), 0o600)
            kubelet = kubecfg.documents(kubelet_config)
            await ch.write_file(posixpath.join(paths.kubelet_dir, "config.yaml"), kubelet.encode(), 0o644)

    async def join(self, ctx: MachineContext) -> None:
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            if await nodes.done_marker(ch, self._paths(ctx), "joined") is not None:
                return
            env = self._env(ctx, await self._name(ch))
            await nodes.run_all(ch, self.options.join_commands, env, self.options.command_timeout)
            await nodes.mark_done(ch, self._paths(ctx), "joined", ctx.cluster.spec.version)

    async def wait_ready(self, ctx: MachineContext) -> None:
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            env = self._env(ctx, await self._name(ch))
            result = await ch.exec(self.options.health_command, env=env, time_limit=30)
        if result.exit_status != 0:
            raise TemporaryError(f"node not ready yet: {(result.stderr or result.stdout).strip()[-300:]}", delay=5.0)

    async def record_node_info(self, ctx: MachineContext) -> None:
        script = (
            "uname -r; uname -m; cat /etc/machine-id 2>/dev/null || echo; "
            "cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo; "
            '. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || echo; hostname'
        )
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            lines = (await ch.run(script)).splitlines() + [""] * 6
        info = ctx.obj.status.node_info
        info.kernel_version, info.architecture, info.machine_id, info.boot_id, info.os_image = (
            lines[0].strip(),
            _arch(lines[1].strip()),
            lines[2].strip(),
            lines[3].strip(),
            lines[4].strip(),
        )
        status = ctx.obj.status
        del status.addresses[:]
        status.addresses.add(type="InternalIP", address=ctx.machine.spec.ip)
        if lines[5].strip():
            status.addresses.add(type="Hostname", address=lines[5].strip().lower())

    async def drain(self, ctx: MachineContext) -> None:
        if not ctx.cluster.spec.machines:
            return  # no control plane to drain from
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            name = await self._name(ch)
        first = nodes.first_master(ctx.cluster)
        # Drain runs on the control plane: its environment names the master's directories.
        env = self._env(ctx, name, self.layout.at(first.ip))
        async with ctx.tools.dialer.connect(nodes.master_target(first)) as master:
            await nodes.run_all(master, self.options.drain_commands, env, self.options.command_timeout)

    async def reset(self, ctx: MachineContext) -> None:
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            env = self._env(ctx, await self._name(ch))
            await nodes.run_all(ch, self.options.reset_commands, env, self.options.command_timeout)
            await nodes.clear_marker(ch, self._paths(ctx), "joined")

    async def upgrade(self, ctx: MachineContext) -> None:
        async with ctx.tools.dialer.connect(nodes.machine_target(ctx.machine)) as ch:
            version = ctx.cluster.status.version
            if await nodes.done_marker(ch, self._paths(ctx), "joined") == version:
                return
            env = self._env(ctx, await self._name(ch))
            env["TKE_VERSION"] = version
            await nodes.run_all(ch, self.options.upgrade_commands, env, self.options.command_timeout)
            await nodes.mark_done(ch, self._paths(ctx), "joined", version)

    async def check_health(self, ctx: MachineContext) -> str:
        await self.wait_ready(ctx)
        return "node healthy"


def _arch(machine: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
