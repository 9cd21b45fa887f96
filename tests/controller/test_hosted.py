"""A hosted cluster and a baremetal worker joining it, through the whole platform: tke-apiserver
and tke-controller with the hosted cluster provider and the baremetal machine provider.

The meta cluster is the Kubernetes API stand-in, its controllers played by the test
(tests/support/hosted.py): they report replicas ready, give the endpoint Service a loopback
address and start the hosted kube-apiserver (a second stand-in) with the certificates of the
Secrets the provider wrote. The worker is a real sshd machine whose kubeadm is the stand-in
(tests/support/standins.py): its join does token discovery against the hosted API over HTTPS
(cluster-info read anonymously and its JWS for the token checked, the CA pinned, kubeadm-config
and kubelet-config read as the bootstrap token), so the objects and RBAC the provider made in
the hosted API, and the token the machine provider stored through it, are what let it join.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import Namespace, Node

from tests.support.apiserver import Running
from tests.support.controller import controller_config, credentials_published
from tests.support.hosted import META_NETWORKS, meta_cluster, meta_controllers
from tests.support.installed import masters
from tests.support.kubeadm_world import kubeadm_machines
from tests.support.ports import free_port
from tests.support.waiting import bounded, wait_for
from tke.internal.controller.manager import Controller
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.provider.ssh import SSHOptions
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, machine_pb2
from tke.plugins.hosted import naming

# Above `bounded` below, itself above the three waits' limits together: a slow step fails in
# its wait, naming it, and a hang elsewhere with the tasks' stacks.
pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

NODE_NAME = 'echo "node-$(echo "$SSH_CONNECTION" | cut -d" " -f3 | tr . -)"'


@contextlib.asynccontextmanager
async def running_controller(config: Any, etcd_config: EtcdConfig) -> AsyncIterator[None]:
    task = asyncio.create_task(Controller(config).run())
    try:
        await credentials_published(etcd_config, "default/test-key")
        yield
    finally:
        task.cancel()
        # Waited for without suppressing CancelledError: a `bounded` timeout that fires here
        # must not be mistaken for the controller's own end.
        await asyncio.wait({task})
        if not task.cancelled() and (err := task.exception()) is not None:
            raise err


async def test_a_baremetal_worker_joins_a_control_plane_hosted_in_the_meta_cluster(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    # A hang says where: this is how a worker that kept a stopping controller alive was found
    # (internal/controller/workers.py), after pytest's timeout had shown only an idle loop.
    async with bounded(390, "the hosted cluster's life"):
        port = free_port()
        with meta_cluster(tmp_path) as (meta, kubeconfig), kubeadm_machines(tmp_path, 1) as (machines, world):
            config = controller_config(
                api.address,
                etcd_config,
                credentials={"default/test-key": CredentialConfig(private_key_file=str(machines.key.private_key_file))},
                ssh=SSHOptions(known_hosts_file=str(machines.known_hosts), connect_attempts=2, connect_timeout=5),
                cluster_providers={
                    "hosted": ProviderConfig(
                        options={"kubeconfig_file": str(kubeconfig), "port": port, **META_NETWORKS}
                    )
                },
                machine_providers={
                    "baremetal": ProviderConfig(options={"root_dir": machines.root_dir, "node_name_command": NODE_NAME})
                },
            )
            async with (
                meta_controllers(meta, tmp_path / "controllers", world=world) as controllers,
                running_controller(config, etcd_config),
            ):
                c = cluster_pb2.Cluster()
                c.metadata.name = "managed"
                c.spec.type, c.spec.version = "hosted", "1.31.2"
                c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
                c = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))

                async def cluster_running() -> cluster_pb2.Cluster | None:
                    got = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="managed"))
                    return got if got.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING else None

                installed = await wait_for(cluster_running, within=120, what="the hosted cluster Running")
                assert installed.status.control_plane_endpoint == f"127.0.0.1:{port}"

                server = machines.servers[0]
                m = machine_pb2.Machine()
                m.metadata.name = "worker-1"
                m.spec.cluster_name, m.spec.type = "managed", "baremetal"
                m.spec.ip, m.spec.ssh_port, m.spec.credential_ref = server.host, server.port, "test-key"
                m.spec.role = machine_pb2.MACHINE_ROLE_WORKER
                await api.machines.Create(machine_pb2.CreateMachineRequest(machine=m))

                async def machine_running() -> machine_pb2.Machine | None:
                    got = await api.machines.Get(machine_pb2.GetMachineRequest(name="worker-1"))
                    return got if got.status.phase == machine_pb2.MACHINE_PHASE_RUNNING else None

                joined = await wait_for(machine_running, within=120, what="the worker Running")
                node = "node-" + server.host.replace(".", "-")
                assert node in [a.address for a in joined.status.addresses]
                joins = [c for c in world.calls("kubeadm") if c["argv"][1] == "join"]
                assert [c["ok"] for c in joins] == [True]
                namespace = naming.namespace(installed)
                async with masters(controllers.hosted[namespace]) as hosted:
                    found: Any = await hosted.get(Node, node)
                    assert found is not None

                await api.machines.Delete(machine_pb2.DeleteMachineRequest(name="worker-1"))
                await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="managed"))

                async def namespace_gone() -> bool:
                    async with masters(meta) as client:
                        return await client.get(Namespace, namespace) is None

                await wait_for(namespace_gone, within=120, what="the control plane's namespace deleted")
