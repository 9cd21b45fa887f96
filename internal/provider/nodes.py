"""Shared pieces of providers that install Kubernetes on machines over SSH with kubeadm: how to
reach a machine, where files go on it, the platform's environment for commands, preparing a
machine (nodeprep profiles), bootstrap tokens, and markers of finished work on the machine
itself (so a restarted controller, or another one, skips it)."""

from __future__ import annotations

import posixpath
import secrets
import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tke.internal.meta.labels import dns1123_subdomain_error
from tke.internal.provider import endpoint as endpoints
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube import pki
from tke.internal.provider.nodeprep import Profile
from tke.internal.provider.ssh import Channel, Target
from tke.platform.v1 import cluster_pb2, machine_pb2

API_PORT = endpoints.API_PORT


@dataclass(frozen=True)
class Paths:
    """Where the platform's files go on one machine (kubeadm's layout under `root`)."""

    root: str = ""

    @property
    def config_dir(self) -> str:
        return f"{self.root}/etc/kubernetes"

    @property
    def pki_dir(self) -> str:
        return f"{self.root}/etc/kubernetes/pki"

    @property
    def kubelet_dir(self) -> str:
        return f"{self.root}/var/lib/kubelet"

    def of(self, path: str) -> str:
        """An absolute path of the machine, under the root."""
        return f"{self.root}{path}"


@dataclass(frozen=True)
class Layout:
    """The file layout of every machine: `root` prefixes every path ("" on real machines);
    "{ip}" in it becomes the machine's address, so that several test machines sharing one
    host keep apart."""

    root: str = ""

    def at(self, ip: str) -> Paths:
        return Paths(self.root.replace("{ip}", ip).rstrip("/"))


def _host(ip: str) -> str:
    """A machine's address as the platform uses it: in commands, paths and files. The apiserver
    refuses anything else; an object stored before that rule fails here, for good."""
    if endpoints.bare_ip(ip) is None:
        raise PermanentError(f"machine address {ip!r} is not a bare IP address")
    return ip


def master_target(m: cluster_pb2.ClusterMachine) -> Target:
    return Target(_host(m.ip), m.ssh_port or 22, m.username or "root", m.credential_ref)


def machine_target(m: machine_pb2.Machine) -> Target:
    return Target(_host(m.spec.ip), m.spec.ssh_port or 22, m.spec.username or "root", m.spec.credential_ref)


def environment(
    cluster: cluster_pb2.Cluster, paths: Paths, *, node_ip: str, node_name: str, role: str
) -> dict[str, str]:
    """Variables every install, join, upgrade and teardown command sees."""
    return {
        "TKE_CLUSTER": cluster.metadata.name,
        "TKE_VERSION": cluster.spec.version.lstrip("v"),
        "TKE_NODE_IP": node_ip,
        "TKE_NODE_NAME": node_name,
        "TKE_ROLE": role,
        "TKE_API_SERVER": endpoints.of(cluster).url,
        "TKE_CONFIG_DIR": paths.config_dir,
        "TKE_PKI_DIR": paths.pki_dir,
        "TKE_KUBELET_DIR": paths.kubelet_dir,
        "TKE_POD_CIDR": cluster.spec.network.pod_cidr,
        "TKE_SERVICE_CIDR": cluster.spec.network.service_cidr,
        "TKE_KUBE_PROXY_ARGS": kubecfg.component_flags(cluster, "kube-proxy"),
        "TKE_ROOT": paths.root,
    }


async def run_all(channel: Channel, commands: Sequence[str], env: Mapping[str, str], time_limit: float) -> None:
    for command in commands:
        await channel.run(command, env=env, time_limit=time_limit)


async def node_name(channel: Channel, command: str = "hostname") -> str:
    """The machine's Kubernetes node name: its host name (or what `command` prints), lower-cased."""
    name = (await channel.run(command)).strip().lower()
    if not name:
        raise TemporaryError(f"{channel.target}: `{command}` printed no node name")
    # The name goes into kubeadm's documents, haproxy.cfg and status: only a name Kubernetes
    # takes for a Node (a DNS subdomain) is used.
    if err := dns1123_subdomain_error(name):
        raise PermanentError(f"{channel.target}: `{command}` printed {name[:80]!r}, not a node name: {err}")
    return name


def marker(paths: Paths, name: str) -> str:
    return posixpath.join(paths.config_dir, f".tke-{name}")


async def done_marker(channel: Channel, paths: Paths, name: str) -> str | None:
    """What a finished piece of work recorded on the machine (None: not done)."""
    try:
        # The machine's to write: whatever bytes it holds are compared, never a decoding error.
        return (await channel.read_file(marker(paths, name))).decode(errors="replace").strip()
    except FileNotFoundError:
        return None


async def mark_done(channel: Channel, paths: Paths, name: str, value: str) -> None:
    await channel.write_file(marker(paths, name), value.encode() + b"\n", 0o644)


async def clear_marker(channel: Channel, paths: Paths, *names: str) -> None:
    await channel.run("rm -f " + " ".join(shlex.quote(marker(paths, n)) for n in names))


async def write_files(channel: Channel, base: str, files: Mapping[str, bytes], last: str = "") -> None:
    """Write `files` under `base`; keys (private and not) get mode 0600, the rest 0644.
    `last` is written after every other file (the marker that the set is complete)."""
    for name in sorted(files, key=lambda n: n == last):
        mode = 0o600 if name.endswith((".key", ".conf")) else 0o644
        await channel.write_file(posixpath.join(base, name), files[name], mode)


async def prepare(
    channel: Channel, paths: Paths, profile: Profile, *, version: str, env: Mapping[str, str], time_limit: float
) -> None:
    """Install the container runtime and kubeadm, kubelet and kubectl of `version` (once per
    version: a marker records it)."""
    version = version.lstrip("v")
    if await done_marker(channel, paths, "prepared") == version:
        return
    for path, data in profile.files(version, paths.root).items():
        await channel.write_file(paths.of(path), data, 0o644)
    full = {**env, **profile.environment(version, paths.root)}
    await run_all(channel, [*profile.module_commands(), *profile.prepare_commands], full, time_limit)
    await mark_done(channel, paths, "prepared", version)


async def upgrade_kubeadm(
    channel: Channel, paths: Paths, profile: Profile, *, version: str, env: Mapping[str, str], time_limit: float
) -> None:
    """kubeadm's package of `version`, from the repository of its minor version."""
    version = version.lstrip("v")
    for path, data in profile.files(version, paths.root).items():
        await channel.write_file(paths.of(path), data, 0o644)
    full = {**env, **profile.environment(version, paths.root)}
    await run_all(channel, profile.upgrade_kubeadm_commands, full, time_limit)


async def upgrade_kubelet(
    channel: Channel, paths: Paths, profile: Profile, *, version: str, env: Mapping[str, str], time_limit: float
) -> None:
    version = version.lstrip("v")
    full = {**env, **profile.environment(version, paths.root)}
    await run_all(channel, profile.upgrade_kubelet_commands, full, time_limit)
    await mark_done(channel, paths, "prepared", version)


_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


def new_bootstrap_token() -> str:
    """A kubeadm bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}: an id and a secret."""
    pick = secrets.choice
    return "".join(pick(_TOKEN_ALPHABET) for _ in range(6)) + "." + "".join(pick(_TOKEN_ALPHABET) for _ in range(16))


async def create_bootstrap_token(
    master: Channel, env: Mapping[str, str], token: str, ttl_seconds: float, description: str
) -> None:
    """Create `token` on a control-plane machine with `kubeadm token create` (its admin.conf
    reaches the API). The token goes through the environment, so that it appears neither in
    the command of an error message nor in a status condition."""
    command = (
        f'kubeadm token create "$TKE_BOOTSTRAP_TOKEN" --ttl {int(ttl_seconds)}s '
        f"--description {shlex.quote(description)} --kubeconfig {shlex.quote(env['TKE_CONFIG_DIR'] + '/admin.conf')}"
    )
    await master.run(command, env={**env, "TKE_BOOTSTRAP_TOKEN": token}, time_limit=120)


def init_documents(
    cluster: cluster_pb2.Cluster,
    node: kubecfg.Node,
    token: kubecfg.BootstrapToken,
    sans: Sequence[str],
    pki_dir: str,
    *,
    fail_swap_on: bool,
    scheduler_config: str = "",
) -> str:
    """kubeadm init's configuration file for the first master: the cluster's configuration at
    its endpoint (with kube-scheduler reading scheduler_config when given: the extender), the
    node, a bootstrap token the platform made, the kubelet and kube-proxy."""
    return kubecfg.documents(
        kubecfg.cluster_configuration(
            cluster, endpoints.of(cluster).address, sans, pki_dir=pki_dir, scheduler_config=scheduler_config
        ),
        kubecfg.init_configuration(cluster, node, token),
        kubecfg.kubelet_configuration(cluster, pki_dir, fail_swap_on=fail_swap_on),
        kubecfg.kube_proxy_configuration(cluster),
    )


def join_documents(cluster: cluster_pb2.Cluster, node: kubecfg.Node, token: str, ca_pem: bytes, pki_dir: str) -> str:
    """kubeadm join's configuration file (a worker, or a master with node.control_plane): token
    discovery at the cluster's endpoint, pinned to the cluster CA's public key."""
    discovery = kubecfg.Discovery(endpoints.of(cluster).address, token, [pki.ca_cert_hash(ca_pem)])
    return kubecfg.documents(kubecfg.join_configuration(cluster, node, discovery, pki_dir))
