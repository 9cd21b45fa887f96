"""The providers' seam to a cluster's API (tke.internal.provider.clusterapi) on the access
layer, against the stand-in serving with a cluster's own CA, as the platform installs them:
the platform's access is a client certificate it mints from that CA, in the group kubeadm
binds to cluster-admin; readiness with the version, missing nodes, cordons."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube.codecs import from_dict

from tests.support.installed import KUBEADM_CLUSTER_ADMINS, masters
from tests.support.kube import objects
from tests.support.kube.running import StandIn, running
from tests.support.pki import TestCA
from tke.internal.provider.clusterapi import KubeClusterAPIs, admin_access
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import pki

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster_ca() -> pki.CertificateAuthority:
    return pki.CertificateAuthority.generate("kubernetes")


@pytest.fixture
def cluster(tmp_path: Path, cluster_ca: pki.CertificateAuthority) -> Iterator[StandIn]:
    ca = TestCA.load(tmp_path / "pki", cluster_ca.pair.cert_pem, cluster_ca.pair.key_pem)
    with running(tmp_path / "kube", ca=ca) as standin:
        yield standin


async def test_the_platform_reaches_a_cluster_with_a_certificate_of_its_ca(
    cluster: StandIn, cluster_ca: pki.CertificateAuthority
) -> None:
    apis = KubeClusterAPIs(timeout=5.0, drain_poll=0.1)
    access = admin_access(cluster.url, cluster_ca, "1.30.2")
    # Before kubeadm init bound kubeadm:cluster-admins, the platform's group may do nothing.
    async with apis.connect(access) as api:
        with pytest.raises(PermanentError, match=r'User "tke:platform" cannot get resource "nodes".*403'):
            await api.node("n1")
    async with masters(cluster) as admin:
        await admin.client.create(from_dict(KUBEADM_CLUSTER_ADMINS))
        await admin.client.create(from_dict(objects.node("n1")))
    async with apis.connect(access) as api:
        assert await api.ready() == "1.30.2"
        node = await api.node("n1")
        assert node is not None and node.status is not None and node.status.nodeInfo is not None
        assert node.status.nodeInfo.kubeletVersion == "v1.30.2"
        await api.drain("n1", timeout=5.0)
        cordoned = await api.node("n1")
        assert cordoned is not None and cordoned.spec is not None and cordoned.spec.unschedulable
        await api.uncordon("n1")
        uncordoned = await api.node("n1")
        assert uncordoned is not None and not (uncordoned.spec and uncordoned.spec.unschedulable)
        await api.delete_node("n1")
        assert await api.node("n1") is None
        # A node that is gone is drained, uncordoned and deleted already.
        await api.drain("n1", timeout=5.0)
        await api.uncordon("n1")
        await api.delete_node("n1")
        cluster.set_failing("etcd")
        with pytest.raises(TemporaryError, match=r"the API server is not ready: etcd failed"):
            await api.ready()


async def test_clusters_before_1_29_give_the_platform_system_masters(
    cluster: StandIn, cluster_ca: pki.CertificateAuthority
) -> None:
    cluster.set_version("1.28.9")
    async with KubeClusterAPIs().connect(admin_access(cluster.url, cluster_ca, "1.28.9")) as api:
        assert await api.ready() == "1.28.9"
        assert await api.node("n1") is None  # allowed to look: system:masters


async def test_a_server_without_a_certificate_of_the_clusters_ca_is_not_trusted(cluster: StandIn) -> None:
    stranger = pki.CertificateAuthority.generate("kubernetes")
    async with KubeClusterAPIs(timeout=5.0).connect(admin_access(cluster.url, stranger, "1.30.2")) as api:
        with pytest.raises(PermanentError, match="is not trusted"):
            await api.ready()
