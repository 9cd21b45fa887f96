"""The baremetal cluster provider: a Kubernetes cluster on the user's own machines, installed
with kubeadm over SSH, the way kubeadm's high-availability guide does it.

Install order (create steps):
- Preflight: SSH to every control-plane machine, the operator's checks.
- EnsureClusterCredential: the cluster, etcd and front-proxy CAs and the service-account keys,
  generated once and kept by the platform (a ClusterCredential in tke-apiserver); the
  control-plane endpoint is recorded in status.
- PrepareMachines: containerd, kubeadm, kubelet and kubectl of the cluster's version (an
  install profile, tke.internal.provider.nodeprep).
- WriteControlPlaneFiles: the shared CAs and keys in every master's /etc/kubernetes/pki
  (kubeadm's pre-distributed PKI: kubeadm makes every leaf certificate and kubeconfig itself
  from these), and with a managed VIP the keepalived and haproxy static pods.
- InitControlPlane: exactly one `kubeadm init` on the first master, once per cluster.
- WaitAPIReady: the API server answers /readyz through the endpoint.
- JoinControlPlane: every other master runs `kubeadm join` with a controlPlane section, one
  at a time, with a fresh bootstrap token and the CA's public key pin.
- RecordAddresses.
- AddonsReady: the network add-on (tke.internal.provider.addons) server-side applied through
  the cluster's API, and its DaemonSets and Deployment rolled out (also after every scale and
  upgrade, where applying it again changes nothing unless the platform's add-on changed). With
  tke-ipamd, kube-scheduler on every master reads a KubeSchedulerConfiguration naming its
  extender (written with the control-plane files, named in kubeadm's ClusterConfiguration).
Status.control_plane records each master once installed; scaling in removes the masters no
longer in spec.machines (drain, `kubeadm reset`, the etcd member removed through a remaining
master even when reset failed, the Node deleted). Upgrades go kubeadm's way: the kubeadm
package then `kubeadm upgrade apply` on the first master, `kubeadm upgrade node` on the
others, then each one's kubelet and kubectl packages and a kubelet restart, one at a time.
Workers follow once the control plane runs the new version (the machine controller).

Idempotence: markers on the machines (prepared, installed, init-started, join-started) and
status.control_plane say what was done; a kubeadm init or join cut off half-way is reset
before it is tried again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tke.internal.config.loader import from_dict
from tke.internal.provider import cluster_credentials, nodeprep, nodes
from tke.internal.provider import endpoint as endpoints
from tke.internal.provider.addons import network, rollout
from tke.internal.provider.clusterapi import ClusterAPI, admin_access
from tke.internal.provider.contract import ClusterContext
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube import pki, vip
from tke.internal.provider.ssh import Channel
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import cluster_pb2

# etcdctl inside the etcd static pod of a master (kubeadm's local etcd), with the
# health-check client certificate kubeadm makes there.
ETCDCTL = (
    'crictl exec "$(crictl ps --name etcd -q | head -n1)" etcdctl --endpoints=https://127.0.0.1:2379 '
    '--cacert="$TKE_PKI_DIR/etcd/ca.crt" --cert="$TKE_PKI_DIR/etcd/healthcheck-client.crt" '
    '--key="$TKE_PKI_DIR/etcd/healthcheck-client.key"'
)


@dataclass
class BaremetalOptions:
    preflight_commands: Sequence[str] = ("uname -srm", 'test "$(id -u)" -eq 0 || sudo -n true')
    # Install profiles by name (tke.internal.provider.nodeprep.Profile fields); "default" is
    # built in: Kubernetes' community package repositories.
    profiles: dict[str, Any] = field(default_factory=dict)
    teardown_commands: Sequence[str] = ("kubeadm reset -f", "rm -rf $TKE_CONFIG_DIR")
    etcdctl: str = ETCDCTL
    command_timeout: float = 600.0
    extra_sans: Sequence[str] = field(default_factory=list)
    # Seconds a bootstrap token lives: long enough for one join.
    bootstrap_token_ttl: float = 1800.0
    # Seconds a drain may take before the step is retried.
    drain_timeout: float = 300.0
    keepalived_image: str = vip.KEEPALIVED_IMAGE
    haproxy_image: str = vip.HAPROXY_IMAGE
    # Prefix of every path on the machines ("{ip}" becomes the machine's address); "" on real
    # machines. Tests give each loopback machine its own directory.
    root_dir: str = ""
    # Prints the machine's Kubernetes node name.
    node_name_command: str = "hostname"
    # The network add-on's options (tke.internal.provider.addons.network.NetworkAddonOptions).
    network_addon: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Seconds that cannot work: a command given no time, a token dead before its join.
        bad = [n for n in ("command_timeout", "bootstrap_token_ttl", "drain_timeout") if getattr(self, n) <= 0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be a positive number of seconds")


class BaremetalClusterProvider:
    name = "baremetal"

    def __init__(self, **options: object) -> None:
        # Typed as the controller's configuration is: a value of the wrong type (a string
        # for a list, "10m" for seconds) stops the controller at start, naming the option.
        self.options = from_dict(BaremetalOptions, dict(options), "options")
        self.profiles = nodeprep.profiles_from(self.options.profiles)
        self.network = network.options_from(self.options.network_addon)
        self.layout = nodes.Layout(self.options.root_dir)
        self.create_steps = [
            Step("Preflight", self.preflight, description="SSH to every control-plane machine and run the checks"),
            Step(
                "EnsureClusterCredential",
                self.ensure_credential,
                description="the cluster's CAs and service-account keys, kept by the platform",
            ),
            Step("PrepareMachines", self.prepare, timeout=3600, description="container runtime and kubeadm packages"),
            Step("WriteControlPlaneFiles", self.write_files, description="shared CAs and keys; the managed VIP"),
            Step("InitControlPlane", self.init, timeout=3600, description="kubeadm init on the first master"),
            Step("WaitAPIReady", self.wait_ready, max_retries=120, description="the API server is ready"),
            Step("JoinControlPlane", self.join, timeout=3600, description="kubeadm join of the other masters"),
            Step("RecordAddresses", self.record_addresses, description="status.addresses"),
            Step("AddonsReady", self.addons, max_retries=120, description="the network add-on applied and rolled out"),
        ]
        self.scale_steps = [
            Step("ScalePreflight", self.preflight),
            Step("ScalePrepareMachines", self.prepare, timeout=3600),
            Step("ScaleWriteControlPlaneFiles", self.write_files),
            Step("ScaleWaitAPIReady", self.wait_ready, max_retries=120),
            Step("ScaleJoinControlPlane", self.join, timeout=3600),
            Step(
                "RemoveControlPlaneMachines",
                self.remove_masters,
                timeout=3600,
                description="drain, reset, leave etcd and delete the masters no longer in spec.machines",
            ),
            Step("ScaleRecordAddresses", self.record_addresses),
            Step("ScaleAddonsReady", self.addons, max_retries=120),
        ]
        self.upgrade_steps = [
            Step("UpgradeFirstControlPlane", self.upgrade_first, timeout=3600, description="kubeadm upgrade apply"),
            Step("UpgradeControlPlanes", self.upgrade_others, timeout=7200, description="kubeadm upgrade node"),
            Step("UpgradeWaitHealthy", self.wait_upgraded, max_retries=120, description="the new version answers"),
            Step("UpgradeAddonsReady", self.addons, max_retries=120),
        ]
        self.delete_steps = [Step("Teardown", self.teardown, timeout=3600, description="kubeadm reset everywhere")]

    # -- validation -------------------------------------------------------------------------

    def validate(self, cluster: cluster_pb2.Cluster) -> list[FieldViolation]:
        """What a baremetal cluster needs besides the apiserver's own checks. Control-plane
        machines may come later (see waiting_for); each needs a credential to log in with."""
        out = []
        if not cluster.spec.network.pod_cidr or not cluster.spec.network.service_cidr:
            out.append(FieldViolation("cluster.spec.network", "pod_cidr and service_cidr are required"))
        if not cluster.spec.version:
            out.append(FieldViolation("cluster.spec.version", "is required: the Kubernetes version to install"))
        else:
            try:
                if kubecfg.minor(cluster.spec.version) < (1, 29):
                    out.append(FieldViolation("cluster.spec.version", "must be 1.29 or later"))
            except (ValueError, IndexError):
                out.append(FieldViolation("cluster.spec.version", "must look like 1.31.2"))
        ips = [m.ip for m in cluster.spec.machines]
        for i, m in enumerate(cluster.spec.machines):
            if not m.credential_ref:
                out.append(
                    FieldViolation(f"cluster.spec.machines[{i}].credential_ref", "is required to log in over SSH")
                )
            if endpoints.bare_ip(m.ip) is None:
                # The apiserver refuses these too; an object stored before that rule stops here,
                # before its address reaches a command or haproxy.cfg.
                out.append(FieldViolation(f"cluster.spec.machines[{i}].ip", f"{m.ip!r} is not a bare IP address"))
            if ips.count(m.ip) > 1:
                out.append(FieldViolation(f"cluster.spec.machines[{i}].ip", f"{m.ip} appears more than once"))
        if err := nodeprep.profile_violation(self.profiles, cluster.spec.install_profile, cluster.metadata.tenant_id):
            out.append(FieldViolation("cluster.spec.install_profile", err))
        if cluster.status.control_plane and not cluster.spec.machines:
            out.append(
                FieldViolation(
                    "cluster.spec.machines",
                    "cannot remove the last control-plane machine of an installed cluster; delete the cluster instead",
                )
            )
        return out + endpoints.violations(cluster)

    def waiting_for(self, cluster: cluster_pb2.Cluster) -> str | None:
        if not cluster.spec.machines:
            return "add at least one control-plane machine to spec.machines"
        return None

    # -- helpers ----------------------------------------------------------------------------

    def _masters(self, ctx: ClusterContext) -> list[cluster_pb2.ClusterMachine]:
        violations = self.validate(ctx.cluster)
        if violations:
            raise PermanentError("; ".join(f"{v.field}: {v.description}" for v in violations))
        return list(ctx.cluster.spec.machines)

    def _installed(self, ctx: ClusterContext) -> dict[str, cluster_pb2.ControlPlaneMember]:
        return {m.machine.ip: m for m in ctx.obj.status.control_plane}

    def _profile(self, ctx: ClusterContext) -> nodeprep.Profile:
        return nodeprep.choose(self.profiles, ctx.cluster.spec.install_profile, ctx.cluster.metadata.tenant_id)

    def _env(self, ctx: ClusterContext, master: cluster_pb2.ClusterMachine, name: str) -> dict[str, str]:
        paths = self.layout.at(master.ip)
        return nodes.environment(ctx.cluster, paths, node_ip=master.ip, node_name=name, role="master")

    async def _name(self, ch: Channel) -> str:
        return await nodes.node_name(ch, self.options.node_name_command)

    def _healthy_master(self, ctx: ClusterContext) -> cluster_pb2.ClusterMachine:
        """An installed master still in the spec, the first in spec order: where kubeadm's
        cluster-wide commands (token create, upgrade apply, etcdctl) run."""
        installed = self._installed(ctx)
        for m in ctx.cluster.spec.machines:
            if m.ip in installed:
                return m
        raise TemporaryError("no installed control-plane machine left in spec.machines")

    @contextlib.asynccontextmanager
    async def _api(self, ctx: ClusterContext) -> AsyncIterator[ClusterAPI]:
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        access = admin_access(endpoints.of(ctx.cluster).url, cas.ca, ctx.cluster.spec.version)
        async with ctx.tools.cluster_apis.connect(access) as api:
            yield api

    def _sans(self, ctx: ClusterContext) -> list[str]:
        ep = endpoints.of(ctx.cluster)
        ips = [m.ip for m in ctx.cluster.spec.machines] + [m.machine.ip for m in ctx.obj.status.control_plane]
        return list(dict.fromkeys([ep.host, *ips, *self.options.extra_sans]))

    # -- create -----------------------------------------------------------------------------

    async def preflight(self, ctx: ClusterContext) -> None:
        for master in self._masters(ctx):
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                name = await self._name(ch)
                for command in self.options.preflight_commands:
                    await ch.run(command, env=self._env(ctx, master, name), time_limit=60)

    async def ensure_credential(self, ctx: ClusterContext) -> None:
        self._masters(ctx)
        await cluster_credentials.ensure_cas(ctx.tools.cluster_credentials, ctx.cluster)
        if not ctx.obj.status.control_plane_endpoint:
            ctx.obj.status.control_plane_endpoint = endpoints.of(ctx.cluster).address

    async def prepare(self, ctx: ClusterContext) -> None:
        profile = self._profile(ctx)
        for master in self._masters(ctx):
            paths = self.layout.at(master.ip)
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                if await nodes.done_marker(ch, paths, "installed") is not None:
                    continue  # installed before: upgrades change its packages, not this
                env = self._env(ctx, master, await self._name(ch))
                await nodes.prepare(
                    ch,
                    paths,
                    profile,
                    version=ctx.cluster.spec.version,
                    env=env,
                    time_limit=self.options.command_timeout,
                )

    def _vip(self, ctx: ClusterContext, cas: pki.ClusterCAs, backends: list[tuple[str, str]]) -> vip.VIPConfig:
        spec = ctx.cluster.spec.control_plane_vip
        ep = endpoints.of(ctx.cluster)
        # VRRP's PASS authentication takes 8 characters: derived from the CA key, so it is
        # secret, the same on every master and every run, and stored nowhere.
        auth = hashlib.sha256(cas.ca.pair.key_pem + b"/vrrp").hexdigest()[:8]
        return vip.VIPConfig(
            address=ep.host,
            port=ep.port,
            interface=spec.interface,
            router_id=spec.virtual_router_id or endpoints.VIP_ROUTER_ID,
            auth_pass=auth,
            backends=backends,
            keepalived_image=self.options.keepalived_image,
            haproxy_image=self.options.haproxy_image,
        )

    async def write_files(self, ctx: ClusterContext) -> None:
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        masters = self._masters(ctx)
        scheduler = network.scheduler_file(ctx.cluster, self.network)
        names: dict[str, str] = {}
        for master in masters:
            paths = self.layout.at(master.ip)
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                names[master.ip] = await self._name(ch)
                try:
                    theirs = await ch.read_file(posixpath.join(paths.pki_dir, "ca.crt"))
                except FileNotFoundError:
                    theirs = b""
                if theirs != cas.ca.pair.cert_pem:
                    await nodes.write_files(ch, paths.pki_dir, cas.files(), last="ca.crt")
                if scheduler is not None:
                    await ch.write_file(paths.of(network.SCHEDULER_CONFIG), scheduler, 0o644)
        if not endpoints.of(ctx.cluster).managed_vip:
            return
        config = self._vip(ctx, cas, [(names[m.ip], m.ip) for m in masters])
        for i, master in enumerate(masters):
            paths = self.layout.at(master.ip)
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                for path, (data, mode) in vip.files(config, first=i == 0).items():
                    await ch.write_file(paths.of(path), data, mode)

    def _node(self, ctx: ClusterContext, master: cluster_pb2.ClusterMachine, name: str) -> kubecfg.Node:
        ignore = ["DirAvailable--etc-kubernetes-manifests"] if endpoints.of(ctx.cluster).managed_vip else []
        if self._profile(ctx).swap == "kubelet":
            ignore.append("Swap")
        return kubecfg.Node(name, master.ip, dict(master.labels), control_plane=True, ignore_preflight_errors=ignore)

    def _record(self, ctx: ClusterContext, master: cluster_pb2.ClusterMachine, name: str) -> None:
        if master.ip not in self._installed(ctx):
            ctx.obj.status.control_plane.add(machine=master, node_name=name)

    async def _reset_if_cut_off(self, ch: Channel, paths: nodes.Paths, env: dict[str, str], started: str) -> None:
        """A kubeadm init or join that was cut off half-way left files that make the next
        attempt fail: kubeadm reset clears them first."""
        if await nodes.done_marker(ch, paths, started) is not None:
            await ch.run("kubeadm reset -f", env=env, time_limit=self.options.command_timeout)

    async def init(self, ctx: ClusterContext) -> None:
        masters = self._masters(ctx)
        if ctx.obj.status.control_plane:
            return  # initialized once; new masters join
        first = masters[0]
        paths = self.layout.at(first.ip)
        async with ctx.tools.dialer.connect(nodes.master_target(first)) as ch:
            name = await self._name(ch)
            if await nodes.done_marker(ch, paths, "installed") is None:
                env = self._env(ctx, first, name)
                await self._reset_if_cut_off(ch, paths, env, "init-started")
                token = kubecfg.BootstrapToken(
                    nodes.new_bootstrap_token(), self.options.bootstrap_token_ttl, f"tke: install {first.ip}"
                )
                cluster = ctx.cluster
                text = nodes.init_documents(
                    cluster,
                    self._node(ctx, first, name),
                    token,
                    self._sans(ctx),
                    paths.pki_dir,
                    fail_swap_on=self._profile(ctx).swap == "off",
                    scheduler_config=paths.of(network.SCHEDULER_CONFIG) if network.uses_ipamd(cluster) else "",
                )
                config = posixpath.join(paths.config_dir, "kubeadm-init.yaml")
                await ch.write_file(config, text.encode(), 0o600)
                await nodes.mark_done(ch, paths, "init-started", cluster.spec.version)
                await ch.run(f"kubeadm init --config {config}", env=env, time_limit=self.options.command_timeout)
                await nodes.mark_done(ch, paths, "installed", cluster.spec.version)
                await nodes.clear_marker(ch, paths, "init-started")
                await ch.run(f"rm -f {config}")  # it holds a bootstrap token
        self._record(ctx, first, name)

    async def wait_ready(self, ctx: ClusterContext) -> None:
        async with self._api(ctx) as api:
            await api.ready()

    async def join(self, ctx: ClusterContext) -> None:
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        for master in self._masters(ctx):
            if master.ip in self._installed(ctx):
                continue
            paths = self.layout.at(master.ip)
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                name = await self._name(ch)
                if await nodes.done_marker(ch, paths, "installed") is None:
                    await self._join_one(ctx, ch=ch, master=master, name=name, paths=paths, cas=cas)
            # Recorded at once (written with the step's progress even if a later master
            # fails): scale-in must know every master that is part of the cluster.
            self._record(ctx, master, name)

    async def _join_one(
        self,
        ctx: ClusterContext,
        *,
        ch: Channel,
        master: cluster_pb2.ClusterMachine,
        name: str,
        paths: nodes.Paths,
        cas: pki.ClusterCAs,
    ) -> None:
        env = self._env(ctx, master, name)
        await self._reset_if_cut_off(ch, paths, env, "join-started")
        token = await self._token(ctx, f"tke: join control-plane {master.ip}")
        cluster = ctx.cluster
        text = nodes.join_documents(cluster, self._node(ctx, master, name), token, cas.ca.pair.cert_pem, paths.pki_dir)
        config = posixpath.join(paths.config_dir, "kubeadm-join.yaml")
        await ch.write_file(config, text.encode(), 0o600)
        await nodes.mark_done(ch, paths, "join-started", cluster.spec.version)
        await ch.run(f"kubeadm join --config {config}", env=env, time_limit=self.options.command_timeout)
        await nodes.mark_done(ch, paths, "installed", cluster.spec.version)
        await nodes.clear_marker(ch, paths, "join-started")
        await ch.run(f"rm -f {config}")  # it holds a bootstrap token

    async def _token(self, ctx: ClusterContext, description: str) -> str:
        master = self._healthy_master(ctx)
        token = nodes.new_bootstrap_token()
        async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
            env = self._env(ctx, master, await self._name(ch))
            await nodes.create_bootstrap_token(ch, env, token, self.options.bootstrap_token_ttl, description)
        return token

    async def record_addresses(self, ctx: ClusterContext) -> None:
        status = ctx.obj.status
        ep = endpoints.of(ctx.cluster)
        del status.addresses[:]
        status.addresses.add(type="Advertise", host=ep.host, port=ep.port)
        for member in status.control_plane:
            status.addresses.add(type="Internal", host=member.machine.ip, port=nodes.API_PORT)

    async def addons(self, ctx: ClusterContext) -> None:
        async with self._api(ctx) as api:
            await rollout.ensure_network(api, ctx.cluster, self.network)

    # -- scale in ---------------------------------------------------------------------------

    async def remove_masters(self, ctx: ClusterContext) -> None:
        wanted = {m.ip for m in self._masters(ctx)}
        for member in list(ctx.obj.status.control_plane):
            if member.machine.ip in wanted:
                continue
            await self._remove_one(ctx, member)
            kept = [m for m in ctx.obj.status.control_plane if m.machine.ip != member.machine.ip]
            del ctx.obj.status.control_plane[:]
            ctx.obj.status.control_plane.extend(kept)

    async def _remove_one(self, ctx: ClusterContext, member: cluster_pb2.ControlPlaneMember) -> None:
        async with self._api(ctx) as api:
            await api.drain(member.node_name, self.options.drain_timeout)
        paths = self.layout.at(member.machine.ip)
        # A member without a credential is none the platform recorded (nor one the apiserver
        # holds for this cluster): it is never logged in to.
        if member.machine.credential_ref:
            try:
                async with ctx.tools.dialer.connect(nodes.master_target(member.machine)) as ch:
                    env = self._env(ctx, member.machine, member.node_name)
                    await ch.run("kubeadm reset -f", env=env, time_limit=self.options.command_timeout)
                    await nodes.clear_marker(ch, paths, "installed", "prepared", "init-started", "join-started")
            except TemporaryError:
                # A dead or half-reset machine must not keep the cluster from shrinking: its etcd
                # membership is removed below, through a master that stays.
                pass
        await self._leave_etcd(ctx, member.node_name)
        async with self._api(ctx) as api:
            await api.delete_node(member.node_name)

    async def _leave_etcd(self, ctx: ClusterContext, member_name: str) -> None:
        master = self._healthy_master(ctx)
        async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
            env = self._env(ctx, master, await self._name(ch))
            listed = await ch.run(f"{self.options.etcdctl} member list -w json", env=env, time_limit=60)
            for member_id in etcd_member_ids(listed, member_name, master.ip):
                await ch.run(f"{self.options.etcdctl} member remove {member_id}", env=env, time_limit=60)

    # -- upgrade ----------------------------------------------------------------------------

    async def _upgrade_master(self, ctx: ClusterContext, master: cluster_pb2.ClusterMachine, *, first: bool) -> None:
        version = ctx.cluster.spec.version.lstrip("v")
        paths = self.layout.at(master.ip)
        profile = self._profile(ctx)
        limit = self.options.command_timeout
        async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
            if await nodes.done_marker(ch, paths, "installed") == version:
                return
            name = await self._name(ch)
            env = self._env(ctx, master, name)
            await nodes.upgrade_kubeadm(ch, paths, profile, version=version, env=env, time_limit=limit)
            upgrade = f"kubeadm upgrade apply v{version} -y" if first else "kubeadm upgrade node"
            await ch.run(upgrade, env=env, time_limit=limit)
            async with self._api(ctx) as api:
                await api.drain(name, self.options.drain_timeout)
            await nodes.upgrade_kubelet(ch, paths, profile, version=version, env=env, time_limit=limit)
            async with self._api(ctx) as api:
                await api.uncordon(name)
            await nodes.mark_done(ch, paths, "installed", version)

    async def upgrade_first(self, ctx: ClusterContext) -> None:
        await self._upgrade_master(ctx, self._healthy_master(ctx), first=True)

    async def upgrade_others(self, ctx: ClusterContext) -> None:
        first = self._healthy_master(ctx)
        installed = self._installed(ctx)
        for master in self._masters(ctx):
            if master.ip != first.ip and master.ip in installed:
                await self._upgrade_master(ctx, master, first=False)

    async def wait_upgraded(self, ctx: ClusterContext) -> None:
        async with self._api(ctx) as api:
            version = await api.ready()
        if version != ctx.cluster.spec.version.lstrip("v"):
            raise TemporaryError(f"the API server runs {version}, not yet {ctx.cluster.spec.version}", delay=5.0)

    # -- delete, health ---------------------------------------------------------------------

    async def teardown(self, ctx: ClusterContext) -> None:
        machines = {m.ip: m for m in ctx.cluster.spec.machines}
        for member in ctx.obj.status.control_plane:
            # Only members with a credential are held by the apiserver like the spec's (see
            # kinds.cluster_machine_ips); the platform records every master it installs so.
            if member.machine.credential_ref:
                machines.setdefault(member.machine.ip, member.machine)
        for master in machines.values():
            paths = self.layout.at(master.ip)
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                env = self._env(ctx, master, await self._name(ch))
                await nodes.run_all(ch, self.options.teardown_commands, env, self.options.command_timeout)
                await nodes.clear_marker(ch, paths, "installed", "prepared", "init-started", "join-started")
        await ctx.tools.cluster_credentials.delete(ctx.cluster.metadata.tenant_id, ctx.cluster.metadata.name)

    async def check_health(self, ctx: ClusterContext) -> str:
        async with self._api(ctx) as api:
            version = await api.ready()
        return f"{endpoints.of(ctx.cluster).address}: ready (Kubernetes {version})"


def etcd_member_ids(listed: str, member_name: str, where: str) -> list[str]:
    """The hex ids of the members named `member_name` in `etcdctl member list -w json` output,
    which the machine prints (its tenant's: anything at all); TemporaryError when it is not
    such a list."""
    try:
        members = json.loads(listed).get("members") or []
        return [format(int(m["ID"]), "x") for m in members if m.get("name") == member_name]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise TemporaryError(f"{where}: etcdctl member list printed no member list") from None
