"""tke-cni-install, as the network add-on's tke-cni DaemonSet runs it on a node: from the
add-on's ConfigMap (rendered for the cluster) and the node's values (NODE_NAME and NODE_IP from
the downward API, the pod range from the Node object in the cluster's API, here the stand-in,
read with the add-on's own RBAC), it puts the runtime, the launchers and the configuration into
the host's directories; then a container gets its address through exactly what it installed
(cni-switch -> Debian's bridge + host-local, in a node namespace of the test)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.codecs import from_dict

from tests.support.cni import DEBIAN_CNI, Runtime, addresses, console_script, netns_path, unique
from tests.support.kube import objects
from tests.support.kube.running import StandIn, running
from tests.support.waiting import wait_until
from tke.internal.provider.addons import network
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.platform.v1 import cluster_pb2

CNI_USER = "system:serviceaccount:kube-system:tke-cni"


async def seed(standin: StandIn) -> None:
    """The add-on's RBAC for tke-cni, and the nodes as kubelet and kube-controller-manager
    left them: node-1 with its pod range, node-2 without one yet."""
    async with ClusterAPI(from_kubeconfig(standin.kubeconfig(user="admin", groups=("system:masters",)))) as api:
        addon = network.render(cluster(cluster_pb2.NETWORK_MODE_BRIDGE))
        await api.apply([o for o in addon if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")])
        node = objects.node("node-1", ip="192.168.1.10")
        node["spec"] = {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}
        client: Any = api.client
        await client.create(from_dict(node))
        await client.create(from_dict(objects.node("node-2", ip="192.168.1.11")))


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[StandIn]:
    with running(tmp_path / "kube") as standin:
        asyncio.run(seed(standin))
        yield standin


def cluster(mode: int) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name, c.spec.network.pod_cidr, c.spec.network.mode = "demo", "10.244.0.0/16", mode  # type: ignore[assignment]
    return c


def config_map(tmp_path: Path, mode: int) -> Path:
    """The tke-cni ConfigMap of a cluster, as the kubelet mounts it."""
    [cm] = [o for o in network.render(cluster(mode)) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "tke-cni"]
    folder = tmp_path / f"config-{mode}"
    folder.mkdir()
    for name, text in cm["data"].items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def kubeconfig(kube: StandIn, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(kube.kubeconfig(user=CNI_USER, groups=("system:serviceaccounts",)))
    return path


def install(*args: str, node: str = "node-1") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "NODE_NAME": node, "NODE_IP": "192.168.1.10"}
    return subprocess.run(
        [console_script("tke-cni-install"), *args], env=env, capture_output=True, text=True, check=False
    )


def test_the_runtime_launchers_and_configuration_land_on_the_host(tmp_path: Path, kubeconfig: Path) -> None:
    config, host = config_map(tmp_path, cluster_pb2.NETWORK_MODE_FIXED_IP), tmp_path / "host"
    runtime = tmp_path / "image" / "opt" / "tke"  # the image's runtime (a stand-in tree)
    (runtime / "bin").mkdir(parents=True)
    (runtime / "bin" / "python3").write_text("#!/bin/sh\n")
    args = (
        "--config-dir",
        str(config),
        "--host",
        str(host),
        "--runtime",
        str(runtime),
        "--kubeconfig",
        str(kubeconfig),
    )
    done = install(*args)
    assert done.returncode == 0, done.stderr
    on_host = host / str(runtime).lstrip("/")
    version = network.platform_version()
    assert os.readlink(on_host / "current") == f"releases/{version}"
    assert (on_host / "releases" / version / "bin" / "python3").read_text() == "#!/bin/sh\n"
    python = f"{runtime}/current/bin/python3"  # as the host sees it
    for name, module in (("cni-switch", "tke.cmd.cni_switch"), ("tke-ipamc", "tke.cmd.ipamc")):
        launcher = host / "opt/cni/bin" / name
        assert launcher.read_text() == f"#!{python} -I\nfrom {module} import main\nmain()\n"
        assert launcher.stat().st_mode & 0o777 == 0o755
    conflist = json.loads((host / "etc/cni/net.d" / network.CONFLIST).read_text())
    switch = conflist["plugins"][0]
    assert switch["defaultNetwork"] == "fixed"
    assert switch["networks"]["bridge"]["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.7.0/24"}]]
    ipamc = switch["networks"]["fixed"]["plugins"][0]["ipam"]
    assert (ipamc["node"], ipamc["nodeIP"]) == ("node-1", "192.168.1.10")
    # Again: nothing to do, nothing rewritten.
    before = {p: p.stat().st_ino for p in (host / "opt/cni/bin").iterdir()}
    again = install(*args)
    assert again.returncode == 0 and again.stdout == "", again.stdout
    assert {p: p.stat().st_ino for p in (host / "opt/cni/bin").iterdir()} == before


def test_a_node_without_its_values_is_an_error_that_says_which(tmp_path: Path, kubeconfig: Path) -> None:
    config = config_map(tmp_path, cluster_pb2.NETWORK_MODE_BRIDGE)
    args = ("--config-dir", str(config), "--host", str(tmp_path / "host"), "--python", sys.executable,
            "--kubeconfig", str(kubeconfig))  # fmt: skip
    done = install(*args, node="node-2")
    assert done.returncode == 1 and "Node node-2 has no spec.podCIDR yet" in done.stderr
    assert not (tmp_path / "host/etc/cni/net.d" / network.CONFLIST).exists()
    done = install(*args, node="")
    assert done.returncode == 1 and "NODE_NAME is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_container_gets_its_address_through_what_was_installed(
    tmp_path: Path, kubeconfig: Path, node: str, namespaces: Callable[[], str]
) -> None:
    config, host = config_map(tmp_path, cluster_pb2.NETWORK_MODE_BRIDGE), tmp_path / "host"
    done = install("--config-dir", str(config), "--host", str(host), "--python", sys.executable,
                   "--kubeconfig", str(kubeconfig))  # fmt: skip
    assert done.returncode == 0, done.stderr
    conflist = json.loads((host / "etc/cni/net.d" / network.CONFLIST).read_text())
    plugin = conflist["plugins"][0]
    # As installed, with its state kept in the test's directory rather than the host's.
    plugin["stateDir"] = str(tmp_path / "state")
    plugin["networks"]["bridge"]["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "leases")
    plugin["networks"]["bridge"]["plugins"][0]["bridge"] = unique("tb")
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
    runtime = Runtime(
        binary=str(host / "opt/cni/bin/cni-switch"), node=node, path=[str(host / "opt/cni/bin"), DEBIAN_CNI]
    )
    pod, cid = namespaces(), unique("c")
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1"
    result = runtime.run("ADD", conf, container_id=cid, netns=netns_path(pod), args=args).ok()
    address = result["ips"][0]["address"]
    assert address.startswith("10.244.7.") and addresses(pod, "eth0") == [address]
    assert runtime.run("DEL", conf, container_id=cid, netns=netns_path(pod), args=args).code == 0


def test_with_wait_it_follows_the_config_map_until_sigterm(tmp_path: Path, kubeconfig: Path) -> None:
    config, host = config_map(tmp_path, cluster_pb2.NETWORK_MODE_BRIDGE), tmp_path / "host"
    target = host / "etc/cni/net.d" / network.CONFLIST
    env = {"PATH": os.environ["PATH"], "NODE_NAME": "node-1", "NODE_IP": "192.168.1.10"}
    proc = subprocess.Popen(
        [console_script("tke-cni-install"), "--config-dir", str(config), "--host", str(host), "--python",
         sys.executable, "--kubeconfig", str(kubeconfig), "--wait", "--interval", "0.2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(target.exists, what="the first installation")
        # The cluster's mode changed: the add-on's ConfigMap, which the kubelet updates in place.
        (config / network.CONFLIST).write_text(
            (config_map(tmp_path, cluster_pb2.NETWORK_MODE_FIXED_IP) / network.CONFLIST).read_text()
        )
        wait_until(lambda: '"defaultNetwork": "fixed"' in target.read_text(), what="the new configuration")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
