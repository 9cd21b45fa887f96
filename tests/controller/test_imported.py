"""The imported provider against the Kubernetes API stand-in (HTTPS, real wire format), with the
credentials an operator configures: a kubeconfig with a client certificate, a kubeconfig with a
bearer token, and a token with a CA. It verifies readiness and version, records the address and
the nodes with their readiness, keeps checking /readyz (Running -> Failed/Unhealthy -> Running),
and a refused credential is permanent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from tests.support.apiserver import Running, imported_cluster
from tests.support.controller import controller_config, credentials_published, publish_credentials
from tests.support.kube import objects
from tests.support.kube.rbac import User
from tests.support.kube.running import StandIn, running
from tests.support.waiting import wait_for
from tke.internal.controller.manager import Controller
from tke.internal.controller.progress import find
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2

pytestmark = pytest.mark.timeout(60)
TOKEN = "imported-token"


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[StandIn]:
    # The token's user is bound to nothing: only client certificates in system:masters may list
    # nodes until the test binds it.
    with running(tmp_path / "kube", kubernetes_version="1.29.4", tokens={TOKEN: User("importer", ("importers",))}) as s:
        yield s


@contextlib.asynccontextmanager
async def controller(
    api: Running, etcd_config: EtcdConfig, credentials: dict[str, CredentialConfig]
) -> AsyncIterator[None]:
    config = controller_config(api.address, etcd_config, health_interval=0.3, credentials=credentials)
    task = asyncio.create_task(Controller(config).run())
    try:
        await credentials_published(etcd_config, *credentials)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def phase(api: Running, name: str, want: int, reason: str = "", message: str = "") -> Any:
    async def check() -> cluster_pb2.Cluster | None:
        c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name))
        if c.status.phase != want or (reason and c.status.reason != reason):
            return None
        healthy = find(c.status.conditions, "Healthy")
        return c if not message or (healthy is not None and message in healthy.message) else None

    return check


async def test_an_imported_cluster_is_verified_recorded_and_health_checked(
    api: Running, etcd_config: EtcdConfig, kube: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TKE_TEST_EDGE_TOKEN", TOKEN)
    monkeypatch.setenv("TKE_TEST_WRONG_TOKEN", "nope")
    admin_file = tmp_path / "admin.kubeconfig"
    admin_file.write_text(kube.kubeconfig(user="kubernetes-admin", groups=("system:masters",)))
    token_file = tmp_path / "token.kubeconfig"
    token_file.write_text(kube.kubeconfig(token=TOKEN))
    async with ClusterAPI(from_kubeconfig(admin_file.read_text())) as admin:
        await admin.client.create(from_dict(objects.node("cp-1", role="control-plane", ip="10.0.0.1")))
        await admin.client.create(from_dict(objects.node("worker-1", ready=False, ip="10.0.0.2")))
        credentials = {
            "default/edge-cert": CredentialConfig(kubeconfig_file=str(admin_file)),
            "default/edge-token": CredentialConfig(kubeconfig_file=str(token_file)),
            "default/edge-env": CredentialConfig(
                token_env="TKE_TEST_EDGE_TOKEN", ca_file=kube.ca.ca_file, servers=[kube.url]
            ),
            "default/wrong": CredentialConfig(
                token_env="TKE_TEST_WRONG_TOKEN", ca_file=kube.ca.ca_file, servers=[kube.url]
            ),
        }
        await publish_credentials(etcd_config, *credentials)  # as the controller will
        for name, credential in (("edge", "edge-cert"), ("by-token", "edge-token"), ("denied", "wrong")):
            await api.clusters.Create(
                cluster_pb2.CreateClusterRequest(cluster=imported_cluster(name, kube.url, credential))
            )

        async with controller(api, etcd_config, credentials):
            c = await wait_for(phase(api, "edge", cluster_pb2.CLUSTER_PHASE_RUNNING, "Healthy"))
            assert c.status.version == "1.29.4"
            port = int(kube.url.rsplit(":", 1)[1])
            assert [(a.type, a.host, a.port) for a in c.status.addresses] == [("Advertise", "127.0.0.1", port)]
            assert (c.status.nodes.total, c.status.nodes.ready) == (2, 1)
            worker, cp = c.status.nodes.items
            assert (worker.name, worker.ready, worker.address) == ("worker-1", False, "10.0.0.2")
            assert worker.message == "KubeletNotReady: container runtime network not ready"
            assert (cp.name, cp.ready, list(cp.roles), cp.kubelet_version) == (
                "cp-1",
                True,
                ["control-plane"],
                "v1.30.2",
            )

            # The node becomes Ready: the next health check reports it.
            ready = objects.node("worker-1")["status"]
            await admin.client.patch(Node.Status, "worker-1", {"status": ready}, patch_type=PatchType.MERGE)
            c = await wait_for(phase(api, "edge", cluster_pb2.CLUSTER_PHASE_RUNNING, message="2/2 nodes Ready"))
            assert c.status.nodes.ready == 2

            # The API server stops being ready: Unhealthy, naming the failing checks; then back.
            kube.set_failing("etcd")
            c = await wait_for(phase(api, "edge", cluster_pb2.CLUSTER_PHASE_FAILED, "Unhealthy"))
            healthy = find(c.status.conditions, "Healthy")
            assert healthy is not None and healthy.message == "the API server is not ready: etcd failed"
            kube.set_failing()
            await wait_for(phase(api, "edge", cluster_pb2.CLUSTER_PHASE_RUNNING, "Healthy"))

            # A bearer token whose user may not list nodes: the step fails for good, saying so.
            d = await wait_for(phase(api, "by-token", cluster_pb2.CLUSTER_PHASE_FAILED))
            assert 'User "importer" cannot list resource "nodes"' in d.status.message
            d = await wait_for(phase(api, "denied", cluster_pb2.CLUSTER_PHASE_FAILED))
            assert "credential refused (401) for bearer token" in d.status.message

            # Bound to a read-only role, the token works (a token credential from env and CA too).
            role = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "node-reader"},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}],
            }
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "importers-read-nodes"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-reader"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "importers"}],
            }
            await admin.apply([role, binding])
            await api.clusters.Create(
                cluster_pb2.CreateClusterRequest(cluster=imported_cluster("by-env", kube.url, "edge-env"))
            )
            c = await wait_for(phase(api, "by-env", cluster_pb2.CLUSTER_PHASE_RUNNING, "Healthy"))
            assert (c.status.nodes.total, c.status.nodes.ready) == (2, 2)
