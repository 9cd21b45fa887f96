"""A real CNI runtime: Debian's podman (CNI backend) creates and removes a pod whose network is
cni-switch, delegating to bridge + tke-ipamc; the pod's address comes from a real tke-ipamd.

podman runs in the test's node namespace (nsenter --net only, so cgroups and /run stay the
host's), with its own containers.conf, storage and run directories, so it neither sees nor
touches the host's containers and networks. `make setup` installs podman, runc and catatonit;
where podman is missing or cannot run, the test fails saying why (it never skips).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.cni import IpamdDaemon, ipamc_network, launchers, unique
from tests.support.tools import require_root, tool
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

pytestmark = pytest.mark.slow


@pytest.fixture
def podman_env(node: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_root("podman and network namespaces")
    for command, package in (
        ("podman", "podman"),
        ("runc", "runc"),
        ("catatonit", "catatonit"),
        ("nsenter", "util-linux"),
    ):
        tool(command, package)
    work = Path(tempfile.mkdtemp(prefix="cni-podman-", dir="/tmp"))
    bin_dir = launchers(work / "bin")
    conf_dir = work / "net.d"
    conf_dir.mkdir()
    (work / "containers.conf").write_text(
        f"""[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin_dir}", "/usr/lib/cni"]
network_config_dir = "{conf_dir}"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
    )
    base = ["nsenter", f"--net=/var/run/netns/{node}", "podman"]
    base += ["--root", str(work / "root"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]
    env = {**os.environ, "CONTAINERS_CONF": str(work / "containers.conf")}

    def podman(*args: str, check: bool = True) -> str:
        out = subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed: {out.stderr}")
        return out.stdout.strip()

    probe = subprocess.run([*base, "info"], env=env, capture_output=True, text=True, timeout=120, check=False)
    if probe.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        pytest.fail(f"podman cannot run here: {probe.stderr.strip()[-300:]}", pytrace=False)
    try:
        yield {"podman": podman, "conf_dir": conf_dir, "work": work}
    finally:
        podman("pod", "rm", "--all", "--force", check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def pool(ipamd: IpamdDaemon) -> str:
    with grpc.insecure_channel(f"unix:{ipamd.socket}") as channel:
        ipam_pb2_grpc.IPAMServiceStub(channel).CreatePool(
            ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="podman", cidr="10.85.7.0/24")), timeout=10
        )
    return "podman"


def test_podman_pod_gets_its_address_from_ipamd(podman_env: dict[str, Any], ipamd: IpamdDaemon, pool: str) -> None:
    network = unique("tkepm")
    delegate = ipamc_network("podman-fixed", unique("tp"), ipamd.socket, podman_env["work"], pool=pool)
    conflist = {
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "cni-switch",
                "stateDir": str(podman_env["work"] / "state"),
                "defaultNetwork": "fixed",
                "networks": {"fixed": delegate},
            }
        ],
    }
    (podman_env["conf_dir"] / f"{network}.conflist").write_text(json.dumps(conflist))
    podman = podman_env["podman"]

    pod = unique("pod")
    podman("pod", "create", "--name", pod, "--network", network)
    podman("pod", "start", pod)
    infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}")
    networks = json.loads(podman("inspect", infra, "--format", "{{json .NetworkSettings.Networks}}"))
    address = networks[network]["IPAddress"]
    assert address.startswith("10.85.7.")

    with grpc.insecure_channel(f"unix:{ipamd.socket}") as channel:
        stub = ipam_pb2_grpc.IPAMServiceStub(channel)
        by_container = ipam_pb2.GetAllocationRequest(attachment=ipam_pb2.Attachment(container_id=infra, ifname="eth0"))
        held = stub.GetAllocation(by_container, timeout=10)
        assert held.ip == address and held.pool == "podman"

        podman("pod", "rm", "--force", pod)
        with pytest.raises(grpc.RpcError) as gone:
            stub.GetAllocation(by_container, timeout=10)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert not list((podman_env["work"] / "state").glob("*/attachments/*.json"))
