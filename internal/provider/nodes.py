"""Shared pieces of providers that install Kubernetes on machines over SSH: how to reach a
machine, where files go on it, run the operator's commands there with the platform's
environment, read the cluster CA from the first control-plane machine, and mark finished work
on the machine itself (so a restarted controller, or another one, skips it)."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.kubeconfig import api_server_url
from tke.internal.provider.ssh import Channel, Target
from tke.platform.v1 import cluster_pb2, machine_pb2

API_PORT = 6443


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


@dataclass(frozen=True)
class Layout:
    """The file layout of every machine: `root` prefixes every path ("" on real machines);
    "{ip}" in it becomes the machine's address, so that several test machines sharing one
    host keep apart."""

    root: str = ""

    def at(self, ip: str) -> Paths:
        return Paths(self.root.replace("{ip}", ip).rstrip("/"))


def master_target(m: cluster_pb2.ClusterMachine) -> Target:
    return Target(m.ip, m.ssh_port or 22, m.username or "root", m.credential_ref)


def machine_target(m: machine_pb2.Machine) -> Target:
    return Target(m.spec.ip, m.spec.ssh_port or 22, m.spec.username or "root", m.spec.credential_ref)


def first_master(cluster: cluster_pb2.Cluster) -> cluster_pb2.ClusterMachine:
    if not cluster.spec.machines:
        raise ValueError(f"cluster {cluster.metadata.name} has no control-plane machines")
    return cluster.spec.machines[0]


def endpoint(cluster: cluster_pb2.Cluster, port: int = API_PORT) -> str:
    """The API server URL nodes and kubeconfigs use: the first control-plane machine."""
    return api_server_url(first_master(cluster).ip, port)


def environment(
    cluster: cluster_pb2.Cluster, paths: Paths, *, node_ip: str, node_name: str, role: str
) -> dict[str, str]:
    """Variables every install, join, upgrade and teardown command sees."""
    return {
        "TKE_CLUSTER": cluster.metadata.name,
        "TKE_VERSION": cluster.spec.version,
        "TKE_NODE_IP": node_ip,
        "TKE_NODE_NAME": node_name,
        "TKE_ROLE": role,
        "TKE_API_SERVER": endpoint(cluster),
        "TKE_CONFIG_DIR": paths.config_dir,
        "TKE_PKI_DIR": paths.pki_dir,
        "TKE_KUBELET_DIR": paths.kubelet_dir,
        "TKE_POD_CIDR": cluster.spec.network.pod_cidr,
        "TKE_SERVICE_CIDR": cluster.spec.network.service_cidr,
        "TKE_KUBE_PROXY_ARGS": kubecfg.component_flags(cluster, "kube-proxy"),
    }


async def run_all(channel: Channel, commands: Sequence[str], env: Mapping[str, str], time_limit: float) -> None:
    for command in commands:
        await channel.run(command, env=env, time_limit=time_limit)


async def node_name(channel: Channel, command: str = "hostname") -> str:
    """The machine's Kubernetes node name: its host name (or what `command` prints), lower-cased."""
    name = (await channel.run(command)).strip().lower()
    if not name:
        raise TemporaryError(f"{channel.target}: `{command}` printed no node name")
    return name


def marker(paths: Paths, name: str) -> str:
    return posixpath.join(paths.config_dir, f".tke-{name}")


async def done_marker(channel: Channel, paths: Paths, name: str) -> str | None:
    """What a finished piece of work recorded on the machine (None: not done)."""
    try:
        return (await channel.read_file(marker(paths, name))).decode().strip()
    except FileNotFoundError:
        return None


async def mark_done(channel: Channel, paths: Paths, name: str, value: str) -> None:
    await channel.write_file(marker(paths, name), value.encode() + b"\n", 0o644)


async def clear_marker(channel: Channel, paths: Paths, name: str) -> None:
    await channel.run(f"rm -f {shlex.quote(marker(paths, name))}")


async def read_cas(channel: Channel, paths: Paths) -> pki.ClusterCAs | None:
    """The cluster's CAs from a control-plane machine; None when ca.crt is not there yet.
    ca.crt is written last, so its presence means the whole set is."""
    if not await channel.exists(posixpath.join(paths.pki_dir, "ca.crt")):
        return None
    files = {name: await channel.read_file(posixpath.join(paths.pki_dir, name)) for name in pki.CA_FILES}
    return pki.ClusterCAs.from_files(files)


async def write_files(channel: Channel, base: str, files: Mapping[str, bytes], last: str = "") -> None:
    """Write `files` under `base`; keys (private and not) get mode 0600, the rest 0644.
    `last` is written after every other file (the marker that the set is complete)."""
    for name in sorted(files, key=lambda n: n == last):
        mode = 0o600 if name.endswith((".key", ".conf")) else 0o644
        await channel.write_file(posixpath.join(base, name), files[name], mode)
