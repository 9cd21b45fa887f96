"""A fake of the clusters' Kubernetes APIs (tke.internal.provider.clusterapi) over the stand-in
world (tests/support/kubeadm_world.py): the API answers once the stand-in kubeadm initialized
the cluster, at the endpoint kubeadm was given, for a client certificate of the cluster's CA;
Nodes are the machines that joined, Ready while their kubelet runs, with the kubelet version
the machine's package has. Drains, uncordons and node deletions are recorded in `calls`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from tests.support.kubeadm_world import World
from tke.internal.provider.clusterapi import ClusterAccess, NodeCondition, NodeStatus
from tke.internal.provider.errors import PermanentError, TemporaryError


class FakeClusterAPI:
    def __init__(self, world: World, calls: list[tuple[str, str]]) -> None:
        self.world = world
        self.calls = calls

    def _cluster(self, state: dict[str, Any]) -> dict[str, Any]:
        if state["cluster"] is None:
            raise TemporaryError("connection refused: no API server yet")
        cluster: dict[str, Any] = state["cluster"]
        return cluster

    async def ready(self) -> str:
        with self.world.state() as state:
            cluster = self._cluster(state)
            for node in cluster["nodes"].values():
                machine = state["machines"].get(node["ip"], {})
                if node["control_plane"] and machine.get("services", {}).get("kubelet") == "active":
                    return "v" + str(cluster["version"])
        raise TemporaryError("/readyz: no control-plane kubelet running")

    async def node_status(self, name: str) -> NodeStatus | None:
        with self.world.state() as state:
            node = self._cluster(state)["nodes"].get(name)
            if node is None:
                return None
            machine = state["machines"].get(node["ip"], {})
        running = machine.get("services", {}).get("kubelet") == "active" and machine.get("member") == name
        return NodeStatus(
            name=name,
            kubelet_version="v" + machine.get("kubelet_version", ""),
            os_image="Debian GNU/Linux 12 (stand-in)",
            kernel_version="6.1.0-stand-in",
            container_runtime_version="containerd://" + machine.get("packages", {}).get("containerd", ""),
            architecture="amd64",
            machine_id=f"machine-{name}",
            addresses=(("InternalIP", node["ip"]), ("Hostname", name)),
            conditions=(NodeCondition("Ready", "True" if running else "False", "KubeletReady" if running else ""),),
            unschedulable=node["unschedulable"],
        )

    def _set(self, name: str, unschedulable: bool | None) -> None:
        with self.world.state() as state:
            nodes = self._cluster(state)["nodes"]
            if name in nodes:
                if unschedulable is None:
                    del nodes[name]
                else:
                    nodes[name]["unschedulable"] = unschedulable

    async def drain(self, name: str, timeout: float) -> None:  # noqa: ASYNC109 - the Protocol's
        self.calls.append(("drain", name))
        self._set(name, True)

    async def uncordon(self, name: str) -> None:
        self.calls.append(("uncordon", name))
        self._set(name, False)

    async def delete_node(self, name: str) -> None:
        self.calls.append(("delete_node", name))
        self._set(name, None)

    async def create_bootstrap_token(self, token: str, ttl_seconds: float, description: str) -> None:
        """As `kubeadm token create` on a master: the stand-in kubeadm's joins accept it."""
        self.calls.append(("create_bootstrap_token", description))
        token_id, _, secret = token.partition(".")
        with self.world.state() as state:
            self._cluster(state)["tokens"][token_id] = {"secret": secret, "expires": time.time() + ttl_seconds}


class FakeClusterAPIs:
    """Also a tke-controller plugin: cluster_api = {plugin = "tests.support.fake_cluster_api:
    FakeClusterAPIs", options = {world_dir = "..."}}."""

    def __init__(self, world: World | None = None, world_dir: str = "") -> None:
        self.world = world if world is not None else World(Path(world_dir))
        self.calls: list[tuple[str, str]] = []

    @contextlib.asynccontextmanager
    async def connect(self, access: ClusterAccess) -> AsyncIterator[FakeClusterAPI]:
        cluster = self.world.read()["cluster"]
        if cluster is not None:
            if access.server != f"https://{cluster['endpoint']}":
                raise TemporaryError(f"{access.server}: connection refused (the API is at {cluster['endpoint']})")
            ca = x509.load_pem_x509_certificate(cluster["ca_pem"].encode())
            try:
                x509.load_pem_x509_certificate(access.client_cert_pem).verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                raise PermanentError("Unauthorized: the client certificate is not from the cluster's CA") from None
            if access.ca_pem.decode() != cluster["ca_pem"]:
                raise PermanentError("x509: the server's certificate is not signed by the given CA")
        yield FakeClusterAPI(self.world, self.calls)
