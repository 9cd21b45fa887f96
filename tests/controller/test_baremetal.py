"""The baremetal providers over real SSH when a machine is not to be trusted: real sshd servers
(Debian's openssh-server, installed by the fixture when missing) on loopback addresses play
the machines. The whole install, upgrade and scale flow is tests/controller/test_kubeadm_install.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support.apiserver import Running
from tests.support.controller import controller_config, credentials_published, publish_credentials
from tests.support.sshd import Machines, SSHServer, keypair, ssh_machines
from tests.support.waiting import wait_for
from tke.internal.controller.manager import Controller
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.provider.ssh import SSHOptions
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, machine_pb2

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

NODE_NAME = 'echo "node-$(echo "$SSH_CONNECTION" | cut -d" " -f3 | tr . -)"'
CLUSTER_OPTIONS: dict[str, Any] = {"node_name_command": NODE_NAME}
MACHINE_OPTIONS: dict[str, Any] = {"node_name_command": NODE_NAME}


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    with ssh_machines(tmp_path, 2) as m:
        yield m


@contextlib.asynccontextmanager
async def controller(api: Running, etcd_config: EtcdConfig, m: Machines, **changes: Any) -> AsyncIterator[None]:
    config = controller_config(
        api.address,
        etcd_config,
        credentials={"default/test-key": CredentialConfig(private_key_file=str(m.key.private_key_file))},
        ssh=SSHOptions(known_hosts_file=str(m.known_hosts), connect_attempts=2, connect_timeout=5),
        cluster_providers={
            "baremetal": ProviderConfig(options={**CLUSTER_OPTIONS, "root_dir": m.root_dir}),
        },
        machine_providers={
            "baremetal": ProviderConfig(options={**MACHINE_OPTIONS, "root_dir": m.root_dir}),
        },
    )
    config = replace(config, **changes)
    task = asyncio.create_task(Controller(config).run())
    try:
        await credentials_published(etcd_config, "default/test-key")
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def baremetal_cluster(name: str, master: SSHServer) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name = name
    c.spec.type = "baremetal"
    c.spec.version = "1.30.2"
    c.spec.network.pod_cidr = "10.244.0.0/16"
    c.spec.network.service_cidr = "10.96.0.0/12"
    c.spec.machines.add(ip=master.host, ssh_port=master.port, credential_ref="test-key", labels={"zone": "a"})
    c.spec.extra_args["kube-apiserver"].args["audit-log-maxage"] = "30"
    c.spec.extra_args["kubelet"].args["max-pods"] = "200"
    return c


def worker(name: str, cluster_name: str, server: SSHServer) -> machine_pb2.Machine:
    m = machine_pb2.Machine()
    m.metadata.name = name
    m.spec.cluster_name = cluster_name
    m.spec.type = "baremetal"
    m.spec.ip = server.host
    m.spec.ssh_port = server.port
    m.spec.credential_ref = "test-key"
    m.spec.role = machine_pb2.MACHINE_ROLE_WORKER
    m.spec.labels["pool"] = "general"
    m.spec.taints.add(key="dedicated", value="batch", effect="NoSchedule")
    return m


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _client_of(config: dict[str, Any]) -> x509.Certificate:
    return _cert(base64.b64decode(config["users"][0]["user"]["client-certificate-data"]))


async def test_an_unknown_host_key_fails_the_cluster_permanently(
    api: Running, etcd_config: EtcdConfig, machines: Machines, tmp_path: Path
) -> None:
    master = machines.servers[0]
    _, other = keypair(tmp_path, "not-the-host-key")
    machines.known_hosts.write_text(f"[{master.host}]:{master.port} {other}\n")
    await publish_credentials(etcd_config, "default/test-key")
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal_cluster("spoofed", master)))

    async def failed() -> cluster_pb2.Cluster | None:
        c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="spoofed"))
        return c if c.status.phase == cluster_pb2.CLUSTER_PHASE_FAILED else None

    async with controller(api, etcd_config, machines):
        c = await wait_for(failed, within=30)
    assert c.status.reason == "StepFailed"
    assert "host key" in c.status.message and "Preflight" in c.status.message
    assert not machines.root_of(master).exists()  # nothing was written to an untrusted machine
