"""The baremetal cluster provider: an independent Kubernetes cluster on the user's own
machines, installed over SSH.

The platform generates everything Kubernetes needs (PKI, kubeconfigs, kubeadm-style and
kubelet configuration) and writes it to the control-plane machines; the commands that
install and start the binaries are the operator's (`install_commands`), because the
binaries come from the operator's own mirror. Each command sees TKE_* variables (cluster,
version, node IP and name, role, API server URL, directories, CIDRs).

Idempotence: the CA is generated once and kept on the first control-plane machine (a
restarted controller reads it back); certificates and kubeconfigs are written only when
missing; a machine whose install finished carries a marker, so install commands never run
twice on it. Masters removed from spec.machines are not uninstalled (delete the cluster).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

from tke.internal.provider import nodes
from tke.internal.provider.contract import ClusterContext
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube import kubeconfig, pki
from tke.internal.provider.ssh import Channel
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import cluster_pb2

DEFAULT_INSTALL = (
    "kubeadm init --config $TKE_CONFIG_DIR/kubeadm-config.yaml --skip-phases=certs,kubeconfig"
    " --ignore-preflight-errors=all",
)
DEFAULT_HEALTH = "curl -fsk --max-time 5 https://127.0.0.1:6443/healthz"


@dataclass
class BaremetalOptions:
    preflight_commands: Sequence[str] = ("uname -srm", 'test "$(id -u)" -eq 0 || sudo -n true')
    install_commands: Sequence[str] = DEFAULT_INSTALL
    health_command: str = DEFAULT_HEALTH
    upgrade_commands: Sequence[str] = ("kubeadm upgrade apply -y v$TKE_VERSION",)
    teardown_commands: Sequence[str] = ("kubeadm reset -f", "rm -rf $TKE_CONFIG_DIR")
    command_timeout: float = 600.0
    extra_sans: Sequence[str] = field(default_factory=list)
    api_port: int = nodes.API_PORT
    # Prefix of every path on the machines ("{ip}" becomes the machine's address); "" on real
    # machines. Tests give each loopback machine its own directory.
    root_dir: str = ""
    # Prints the machine's Kubernetes node name.
    node_name_command: str = "hostname"


class BaremetalClusterProvider:
    name = "baremetal"

    def __init__(self, **options: object) -> None:
        self.options = BaremetalOptions(**options)  # type: ignore[arg-type]
        self.layout = nodes.Layout(self.options.root_dir)
        install = [
            Step("Preflight", self.preflight, description="SSH to every control-plane machine and run the checks"),
            Step(
                "EnsureClusterCA", self.ensure_ca, description="cluster, etcd and front-proxy CAs, service account keys"
            ),
            Step("EnsureCertificates", self.ensure_certificates, description="component certificates with their SANs"),
            Step("EnsureKubeconfigs", self.ensure_kubeconfigs, description="admin, component and kubelet kubeconfigs"),
            Step("WriteConfiguration", self.write_configuration, description="kubeadm and kubelet configuration"),
            Step("InstallControlPlane", self.install, timeout=3600, description="the operator's install commands"),
            Step(
                "WaitHealthy", self.wait_healthy, max_retries=60, description="the API server answers its health check"
            ),
            Step("RecordAddresses", self.record_addresses, description="status.addresses"),
        ]
        self.create_steps = install
        # Scale re-runs the same idempotent work for the masters now in the spec.
        self.scale_steps = [Step(f"Scale{s.name}", s.run, s.timeout, s.max_retries, s.description) for s in install]
        self.upgrade_steps = [
            Step("UpgradeControlPlane", self.upgrade, timeout=3600, description="the operator's upgrade commands"),
            Step("UpgradeWaitHealthy", self.wait_healthy, max_retries=60, description="healthy after the upgrade"),
        ]
        self.delete_steps = [Step("Teardown", self.teardown, description="the operator's teardown commands")]

    # -- validation -------------------------------------------------------------------------

    def validate(self, cluster: cluster_pb2.Cluster) -> list[FieldViolation]:
        """What a baremetal cluster needs besides the apiserver's own checks. Control-plane
        machines may come later (see waiting_for); each needs a credential to log in with."""
        out = []
        if not cluster.spec.network.pod_cidr or not cluster.spec.network.service_cidr:
            out.append(FieldViolation("cluster.spec.network", "pod_cidr and service_cidr are required"))
        if not cluster.spec.version:
            out.append(FieldViolation("cluster.spec.version", "is required: the Kubernetes version to install"))
        for i, m in enumerate(cluster.spec.machines):
            if not m.credential_ref:
                out.append(
                    FieldViolation(f"cluster.spec.machines[{i}].credential_ref", "is required to log in over SSH")
                )
        return out

    def waiting_for(self, cluster: cluster_pb2.Cluster) -> str | None:
        if not cluster.spec.machines:
            return "add at least one control-plane machine to spec.machines"
        return None

    # -- helpers ----------------------------------------------------------------------------

    def _masters(self, ctx: ClusterContext) -> list[cluster_pb2.ClusterMachine]:
        violations = self.validate(ctx.cluster)
        if violations:
            raise PermanentError("; ".join(f"{v.field}: {v.description}" for v in violations))
        if not ctx.cluster.spec.machines:
            raise TemporaryError("no control-plane machine in spec.machines")
        return list(ctx.cluster.spec.machines)

    def _env(self, ctx: ClusterContext, master: cluster_pb2.ClusterMachine, name: str) -> dict[str, str]:
        paths = self.layout.at(master.ip)
        return nodes.environment(ctx.cluster, paths, node_ip=master.ip, node_name=name, role="master")

    async def _name(self, ch: Channel) -> str:
        return await nodes.node_name(ch, self.options.node_name_command)

    async def _cas(self, ctx: ClusterContext) -> pki.ClusterCAs:
        first = nodes.first_master(ctx.cluster)
        async with ctx.tools.dialer.connect(nodes.master_target(first)) as ch:
            cas = await nodes.read_cas(ch, self.layout.at(first.ip))
        if cas is None:
            raise TemporaryError("the cluster CA is not on the first control-plane machine yet")
        return cas

    # -- create -----------------------------------------------------------------------------

    async def preflight(self, ctx: ClusterContext) -> None:
        for master in self._masters(ctx):
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                name = await self._name(ch)
                for command in self.options.preflight_commands:
                    await ch.run(command, env=self._env(ctx, master, name), time_limit=60)

    async def ensure_ca(self, ctx: ClusterContext) -> None:
        masters = self._masters(ctx)
        first = self.layout.at(masters[0].ip)
        async with ctx.tools.dialer.connect(nodes.master_target(masters[0])) as ch:
            cas = await nodes.read_cas(ch, first)
            if cas is None:
                cas = pki.ClusterCAs.generate()
                await nodes.write_files(ch, first.pki_dir, cas.files(), last="ca.crt")
        for master in masters[1:]:
            paths = self.layout.at(master.ip)
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                theirs = await nodes.read_cas(ch, paths)
                if theirs is None or theirs.ca.pair.cert_pem != cas.ca.pair.cert_pem:
                    await nodes.write_files(ch, paths.pki_dir, cas.files(), last="ca.crt")

    async def ensure_certificates(self, ctx: ClusterContext) -> None:
        cas = await self._cas(ctx)
        masters = self._masters(ctx)
        for master in masters:
            paths = self.layout.at(master.ip)
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                if await self._certificate_valid(ch, paths, cas):
                    continue
                name = await self._name(ch)
                files = pki.master_certificates(
                    cas,
                    node_name=name,
                    address=master.ip,
                    service_cidr=ctx.cluster.spec.network.service_cidr,
                    dns_domain=ctx.cluster.spec.network.dns_domain,
                    masters=[m.ip for m in masters],
                    extra_sans=list(self.options.extra_sans),
                )
                await nodes.write_files(ch, paths.pki_dir, files, last="apiserver.crt")

    async def _certificate_valid(self, ch: Channel, paths: nodes.Paths, cas: pki.ClusterCAs) -> bool:
        """apiserver.crt (written last) is there and was issued by this cluster's CA."""
        try:
            pem = await ch.read_file(posixpath.join(paths.pki_dir, "apiserver.crt"))
        except FileNotFoundError:
            return False
        return pki.issued_by(pem, cas.ca)

    async def ensure_kubeconfigs(self, ctx: ClusterContext) -> None:
        cas = await self._cas(ctx)
        server = nodes.endpoint(ctx.cluster, self.options.api_port)
        for master in self._masters(ctx):
            paths = self.layout.at(master.ip)
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                existing = await _read_or_none(ch, posixpath.join(paths.config_dir, "kubelet.conf"))
                if existing is not None and kubeconfig.ca_of(existing.decode()) == cas.ca.pair.cert_pem:
                    continue
                name = await self._name(ch)
                files = kubeconfig.component_kubeconfigs(cas.ca, ctx.cluster.metadata.name, server)
                files["kubelet.conf"] = kubeconfig.node_kubeconfig(cas.ca, ctx.cluster.metadata.name, server, name)
                await nodes.write_files(ch, paths.config_dir, files, last="kubelet.conf")

    async def write_configuration(self, ctx: ClusterContext) -> None:
        cluster = ctx.cluster
        server = nodes.endpoint(cluster, self.options.api_port).removeprefix("https://")
        for master in self._masters(ctx):
            paths = self.layout.at(master.ip)
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                name = await self._name(ch)
                sans = list(self.options.extra_sans)
                text = kubecfg.documents(
                    kubecfg.cluster_configuration(cluster, server, cert_sans=sans, pki_dir=paths.pki_dir),
                    kubecfg.init_configuration(name, master.ip, cluster, dict(master.labels)),
                    kubecfg.kubelet_configuration(cluster, paths.pki_dir),
                    kubecfg.kube_proxy_configuration(cluster),
                )
                await ch.write_file(posixpath.join(paths.config_dir, "kubeadm-config.yaml"), text.encode(), 0o600)
                kubelet = kubecfg.documents(kubecfg.kubelet_configuration(cluster, paths.pki_dir))
                await ch.write_file(posixpath.join(paths.kubelet_dir, "config.yaml"), kubelet.encode(), 0o644)

    async def install(self, ctx: ClusterContext) -> None:
        for master in self._masters(ctx):
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                if await nodes.done_marker(ch, self.layout.at(master.ip), "installed") is not None:
                    continue  # installed before (this run or a previous controller's)
                name = await self._name(ch)
                env = self._env(ctx, master, name)
                await nodes.run_all(ch, self.options.install_commands, env, self.options.command_timeout)
                await nodes.mark_done(ch, self.layout.at(master.ip), "installed", ctx.cluster.spec.version)

    async def wait_healthy(self, ctx: ClusterContext) -> None:
        for master in self._masters(ctx):
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                name = await self._name(ch)
                result = await ch.exec(self.options.health_command, env=self._env(ctx, master, name), time_limit=30)
                if result.exit_status != 0:
                    why = (result.stderr or result.stdout).strip()[-300:]
                    raise TemporaryError(f"{master.ip}: not healthy yet: {why}", delay=5.0)

    async def record_addresses(self, ctx: ClusterContext) -> None:
        status = ctx.obj.status
        del status.addresses[:]
        masters = self._masters(ctx)
        status.addresses.add(type="Advertise", host=masters[0].ip, port=self.options.api_port)
        for master in masters:
            status.addresses.add(type="Internal", host=master.ip, port=self.options.api_port)

    # -- upgrade, delete, health -------------------------------------------------------------

    async def upgrade(self, ctx: ClusterContext) -> None:
        version = ctx.cluster.spec.version
        for master in self._masters(ctx):
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                if await nodes.done_marker(ch, self.layout.at(master.ip), "installed") == version:
                    continue
                name = await self._name(ch)
                env = self._env(ctx, master, name)
                await nodes.run_all(ch, self.options.upgrade_commands, env, self.options.command_timeout)
                await nodes.mark_done(ch, self.layout.at(master.ip), "installed", version)

    async def teardown(self, ctx: ClusterContext) -> None:
        for master in ctx.cluster.spec.machines:
            async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
                name = await self._name(ch)
                env = self._env(ctx, master, name)
                await nodes.run_all(ch, self.options.teardown_commands, env, self.options.command_timeout)

    async def check_health(self, ctx: ClusterContext) -> str:
        master = nodes.first_master(ctx.cluster)
        async with ctx.tools.dialer.connect(nodes.master_target(master)) as ch:
            result = await ch.exec(self.options.health_command, env=self._env(ctx, master, ""), time_limit=30)
        if result.exit_status != 0:
            raise TemporaryError(f"{master.ip}: health check failed: {(result.stderr or result.stdout).strip()[-300:]}")
        return f"{master.ip}: healthy"


async def _read_or_none(ch: Channel, path: str) -> bytes | None:
    try:
        return await ch.read_file(path)
    except FileNotFoundError:
        return None
