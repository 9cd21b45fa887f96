"""The Kubernetes side of tke-ipamd's tests: the API stand-in as the cluster, the test as its
administrator (playing controllers and kubelets), and tke-ipamd's own identity, a service
account bound by nothing but the network add-on's RBAC (so the tests run with exactly what the
add-on grants)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from lightkube.codecs import from_dict

from tests.support.kube import objects
from tests.support.kube.running import StandIn, running
from tke.internal.provider.addons import network
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.platform.v1 import cluster_pb2

NS = "shop"
IPAMD_USER = "system:serviceaccount:kube-system:tke-ipamd"


def kube_server(tmp_path: Path, **options: Any) -> contextlib.AbstractContextManager[StandIn]:
    """The stand-in with bookmarks every 0.2 s (watches are resumed from them)."""
    return running(tmp_path / "kube", bookmark_interval=0.2, **options)


async def granted(standin: StandIn) -> ClusterAPI:
    """The cluster's administrator, after it applied the network add-on's RBAC for tke-ipamd
    and made the tests' namespace."""
    admin = ClusterAPI(from_kubeconfig(standin.kubeconfig(user="admin", groups=("system:masters",))))
    cluster = cluster_pb2.Cluster()
    cluster.metadata.name, cluster.spec.network.mode = "c", cluster_pb2.NETWORK_MODE_FIXED_IP
    rbac = [o for o in network.render(cluster) if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    await admin.apply([objects.namespace(NS), *rbac])
    return admin


def ipamd_kubeconfig(standin: StandIn) -> str:
    """A kubeconfig of tke-ipamd's service account."""
    return standin.kubeconfig(user=IPAMD_USER, groups=("system:serviceaccounts",))


async def create(admin: ClusterAPI, manifest: dict[str, Any]) -> dict[str, Any]:
    client: Any = admin.client
    created: dict[str, Any] = (await client.create(from_dict(manifest))).to_dict()
    return created
