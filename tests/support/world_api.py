"""The Kubernetes API of the stand-in world's cluster (tests/support/kubeadm_world.py), for
tests of the whole install: the platform's real client (tke.internal.provider.clusterapi, the
controller's default) talks to the Kubernetes API stand-in (tests/support/kube) over HTTPS.

- The stand-in comes up once the stand-in `kubeadm init` ran, as kube-apiserver does on the
  first master: its serving certificate is signed by the cluster's own CA (the one the platform
  generated and wrote to that machine), and it trusts the client certificates of that CA, so
  the platform reaches it with the client certificate it mints, checking the server against
  the CA it keeps. It holds what kubeadm init (1.29 and later) adds to RBAC, the binding of the
  group kubeadm:cluster-admins to cluster-admin, and reports the version the world's control
  plane runs (`kubeadm upgrade apply` changes it).
- `WorldAPI.run()` plays the kubelets: a machine that joined registers its Node once (Ready
  while its kubelet runs, with its kubelet's version and containerd's, the OS of a Debian
  machine) and keeps the Node's status current. A Node deleted through the API stays deleted:
  a running kubelet registers only when it starts. (The kubelets act as system:masters: the
  stand-in has no Node authorizer.)
- It also plays the DaemonSet and Deployment controllers, as far as their status goes
  (tests/support/kube/rollouts.py).
- `Routed` plays the network between the platform and an endpoint these tests cannot build on
  the host (a VIP in another subnet, a load balancer's DNS name): connections to the endpoint
  go to the stand-in, and its certificate is still checked against the endpoint's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from tests.support.installed import KUBEADM_CLUSTER_ADMINS, masters
from tests.support.kube import objects, rollouts
from tests.support.kube.running import StandIn, running
from tests.support.kubeadm_world import World
from tests.support.pki import TestCA
from tke.internal.provider.clusterapi import ClusterAPI, ClusterAPIs
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.kube.api import ClusterAPI as KubeClient

TICK = 0.1  # seconds between two looks at the world: a kubelet's status updates, sped up


class WorldAPI:
    def __init__(self, world: World, directory: Path, *, host: str, port: int, server_names: tuple[str, ...]) -> None:
        self.world = world
        self.directory = directory
        self.host, self.port, self.server_names = host, port, server_names
        self.standin: StandIn | None = None
        self._registered: set[str] = set()
        self._reported: dict[str, tuple[bool, str]] = {}

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def admin(self) -> KubeClient:
        """A client of a cluster administrator (system:masters), for the test's own checks."""
        assert self.standin is not None, "the cluster's API is not up yet"
        return masters(self.standin)

    async def run(self, stack: contextlib.ExitStack) -> None:
        kubelets: KubeClient | None = None
        try:
            while True:
                state = self.world.read()
                cluster = state["cluster"]
                if cluster is not None:
                    if self.standin is None:
                        self.standin = stack.enter_context(self._start(cluster))
                        kubelets = self.admin()
                        await kubelets.client.create(from_dict(KUBEADM_CLUSTER_ADMINS))
                    assert kubelets is not None
                    self.standin.set_version(cluster["version"])
                    await self._kubelets(kubelets, cluster, state["machines"])
                    await rollouts.play(kubelets)
                await asyncio.sleep(TICK)
        finally:
            if kubelets is not None:
                await kubelets.aclose()

    def _start(self, cluster: dict[str, Any]) -> contextlib.AbstractContextManager[StandIn]:
        pki = self.world.root_of(cluster["init_machine"]) / "etc/kubernetes/pki"
        ca = TestCA.load(self.directory / "pki", (pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
        return running(
            self.directory,
            kubernetes_version=cluster["version"],
            ca=ca,
            host=self.host,
            port=self.port,
            server_names=self.server_names,
        )

    async def _kubelets(self, api: KubeClient, cluster: dict[str, Any], machines: dict[str, Any]) -> None:
        for name, node in cluster["nodes"].items():
            machine = machines.get(node["ip"], {})
            if machine.get("member") != name:
                continue  # reset, or joined again under another name: no kubelet of this node
            ready = machine.get("services", {}).get("kubelet") == "active"
            kubelet = "v" + machine.get("kubelet_version", cluster["version"])
            manifest = objects.node(
                name, ready=ready, ip=node["ip"], kubelet=kubelet, role="control-plane" if node["control_plane"] else ""
            )
            runtime = machine.get("packages", {}).get("containerd", "")
            manifest["status"]["nodeInfo"]["containerRuntimeVersion"] = f"containerd://{runtime}"
            if name not in self._registered:
                self._registered.add(name)
                await api.client.create(from_dict(manifest))
            elif self._reported.get(name) != (ready, kubelet):
                try:
                    await api.client.patch(
                        Node.Status, name, {"status": manifest["status"]}, patch_type=PatchType.MERGE
                    )
                except ApiError as err:
                    if err.status.code != 404:
                        raise  # 404: deleted; a running kubelet does not register again
            self._reported[name] = (ready, kubelet)


@contextlib.asynccontextmanager
async def world_api(
    world: World, directory: Path, *, port: int, host: str = "127.0.0.1", server_names: tuple[str, ...] = ()
) -> AsyncIterator[WorldAPI]:
    """The world's cluster API on `host`:`port`, up once kubeadm init ran, for the block."""
    api = WorldAPI(world, directory, host=host, port=port, server_names=server_names)
    with contextlib.ExitStack() as stack:
        task = asyncio.create_task(api.run(stack))
        try:
            yield api
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # raises what broke the kubelets, if anything did


class Routed:
    """`apis` with connections to the endpoints of `routes` (URL -> URL) sent elsewhere."""

    def __init__(self, apis: ClusterAPIs, routes: dict[str, str]) -> None:
        self.apis = apis
        self.routes = routes

    def connect(self, access: ClusterAccess) -> contextlib.AbstractAsyncContextManager[ClusterAPI]:
        target = self.routes.get(access.server)
        if target is not None:
            name = urlsplit(access.server).hostname or ""
            access = dataclasses.replace(access, server=target, tls_server_name=access.tls_server_name or name)
        return self.apis.connect(access)
