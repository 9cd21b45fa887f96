"""docs/controller.md's walk-through, for real: grpcurl creates a baremetal cluster and a
worker machine, a real tke-controller process (the console script's module) installs them
over SSH on sshd "machines" (stand-in kubeadm and friends: no Kubernetes binaries here) and
reaches the cluster's Kubernetes API with its default client (the API stand-in, up once
kubeadm init ran, tests/support/world_api.py), a grpcurl Watch shows the conditions advance
to Running, events are listed, and a grpcurl Delete tears everything down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import LOOPBACK_NETWORKS
from tests.support.apiserver import Running
from tests.support.controller import ControllerProcess, publish_credentials
from tests.support.kubeadm_world import World, kubeadm_machines
from tests.support.ports import free_port
from tests.support.sshd import Machines
from tests.support.tools import grpcurl as grpcurl_binary
from tests.support.waiting import wait_for
from tests.support.world_api import world_api
from tke.internal.storage.etcd import EtcdConfig

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.slow,
]
NODE_NAME = 'echo "node-$(echo "$SSH_CONNECTION" | cut -d" " -f3 | tr . -)"'


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[tuple[Machines, World]]:
    with kubeadm_machines(tmp_path / "ssh", 2) as got:
        yield got


async def grpcurl(api: Running, method: str, data: Any) -> tuple[int, Any]:
    argv = [grpcurl_binary(), "-plaintext", "-d", json.dumps(data), api.address, method]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if proc.returncode == 0 and out.strip() else None


def messages(text: str) -> list[Any]:
    """grpcurl prints a stream as JSON documents one after the other."""
    decoder = json.JSONDecoder()
    out: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        try:
            doc, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return out  # a document cut by stopping grpcurl
        out.append(doc)


def controller_toml(api: Running, etcd_config: EtcdConfig, m: Machines) -> dict[str, Any]:
    return {
        "retry_base_delay": 0.2,
        "health_interval": 5.0,
        "apiserver": {"address": api.address, "token_env": ""},
        "etcd": {"endpoints": etcd_config.endpoints, "prefix": etcd_config.prefix},
        "leader": {"ttl": 5},
        "ssh": {"known_hosts_file": str(m.known_hosts)},
        "machines": {"allowed_networks": LOOPBACK_NETWORKS},  # the sshd machines are on loopback
        "credentials": {"default/ops-key": {"private_key_file": str(m.key.private_key_file)}},
        "cluster_providers": {
            "baremetal": {
                "options": {
                    "root_dir": m.root_dir,
                    "node_name_command": NODE_NAME,
                }
            }
        },
        "machine_providers": {
            "baremetal": {
                "options": {
                    "root_dir": m.root_dir,
                    "node_name_command": NODE_NAME,
                }
            }
        },
    }


async def test_create_watch_and_delete_a_baremetal_cluster_with_grpcurl(
    api: Running, etcd_config: EtcdConfig, machines: tuple[Machines, World], tmp_path: Path
) -> None:
    ssh, world = machines
    master, node = ssh.servers
    # The master's address, with a port of its own: runs in parallel never meet on 6443.
    port = free_port(master.host)
    # As the controller will once it leads: the apiserver takes objects naming "ops-key" from then on.
    await publish_credentials(etcd_config, "default/ops-key")
    cluster = {
        "cluster": {
            "metadata": {"name": "demo"},
            "spec": {
                "type": "baremetal",
                "version": "1.30.2",
                "network": {"podCidr": "10.244.0.0/16", "serviceCidr": "10.96.0.0/12"},
                "machines": [{"ip": master.host, "sshPort": master.port, "credentialRef": "ops-key"}],
                "controlPlaneEndpoint": {"host": master.host, "port": port},
            },
        }
    }
    code, _ = await grpcurl(api, "tke.platform.v1.ClusterService/Create", cluster)
    assert code == 0
    machine = {
        "machine": {
            "metadata": {"name": "node-1"},
            "spec": {
                "clusterName": "demo",
                "type": "baremetal",
                "ip": node.host,
                "sshPort": node.port,
                "credentialRef": "ops-key",
                "role": "MACHINE_ROLE_WORKER",
            },
        }
    }
    code, _ = await grpcurl(api, "tke.platform.v1.MachineService/Create", machine)
    assert code == 0

    watch_log = tmp_path / "watch.json"
    with watch_log.open("wb") as out:
        watch = await asyncio.create_subprocess_exec(
            grpcurl_binary(), "-plaintext", "-d", "{}", api.address, "tke.platform.v1.ClusterService/Watch", stdout=out
        )

    def watched() -> list[Any]:
        text = watch_log.read_text()
        return [m["object"] for m in messages(text) if m.get("type") != "WATCH_EVENT_TYPE_BOOKMARK"]

    controller = ControllerProcess(tmp_path, "tke-controller", controller_toml(api, etcd_config, ssh))
    async with world_api(world, tmp_path / "kube", host=master.host, port=port) as cluster_api:
        try:
            # The watch shows the cluster as created before anything acts on it.
            await wait_for(watched, what="grpcurl's watch showing the cluster")
            controller.start()

            async def running() -> bool:
                code, got = await grpcurl(api, "tke.platform.v1.MachineService/Get", {"name": "node-1"})
                return code == 0 and got.get("status", {}).get("phase") == "MACHINE_PHASE_RUNNING"

            await wait_for(running, within=60)
            async with cluster_api.admin() as admin:  # the controller reached the API at the endpoint
                assert [n.metadata.name for n in await admin.nodes() if n.metadata] == [
                    "node-" + s.host.replace(".", "-") for s in (master, node)
                ]

            def cluster_running() -> bool:  # grpcurl wrote the event that says so
                return [o.get("status", {}).get("phase") for o in watched()][-1:] == ["CLUSTER_PHASE_RUNNING"]

            await wait_for(cluster_running, what="the watch showing the cluster running")
            watch.terminate()
            await watch.wait()
            seen = watched()
            phases = [o.get("status", {}).get("phase") for o in seen]
            assert "CLUSTER_PHASE_INITIALIZING" in phases and phases[-1] == "CLUSTER_PHASE_RUNNING"
            done_counts = [
                sum(1 for c in o.get("status", {}).get("conditions", []) if c.get("status") == "CONDITION_STATUS_TRUE")
                for o in seen
            ]
            assert done_counts == sorted(done_counts) and done_counts[-1] >= 9  # conditions only advance

            code, events = await grpcurl(
                api,
                "tke.platform.v1.EventService/List",
                {"involvedObjectKind": "Cluster", "involvedObjectName": "demo"},
            )
            assert code == 0 and "StepSucceeded" in {e["spec"]["reason"] for e in events["items"]}

            code, _ = await grpcurl(api, "tke.platform.v1.ClusterService/Delete", {"name": "demo"})
            assert code == 0

            async def gone() -> bool:
                code, _ = await grpcurl(api, "tke.platform.v1.ClusterService/Get", {"name": "demo"})
                return code == 64 + 5  # NOT_FOUND

            await wait_for(gone, within=60)
            assert not (ssh.root_of(master) / "etc/kubernetes").exists()
            assert controller.alive()
            assert controller.stop() == 0, controller.log()[-3000:]  # SIGTERM: a clean exit
        finally:
            if watch.returncode is None:
                watch.kill()
                await watch.wait()
            controller.stop()
