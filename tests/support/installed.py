"""A cluster as the platform leaves it once installed, without installing it, for tests of what
comes after (kubeconfigs for users): its Kubernetes API (the stand-in, serving with the
cluster's CA and trusting client certificates of that CA, with the RBAC binding kubeadm init
makes for its admin group), and its records in tke-apiserver (the Cluster, Running at that
API's address, and the ClusterCredential holding the CA)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2
from lightkube.codecs import from_dict

from tests.support.kube.running import StandIn, running
from tests.support.pki import TestCA
from tke.internal.provider import cluster_credentials
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, credential_pb2

# What kubeadm init (1.29 and later) binds in RBAC for admin.conf's group, the platform's.
KUBEADM_CLUSTER_ADMINS = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "kubeadm:cluster-admins"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}],
}


def masters(standin: StandIn) -> ClusterAPI:
    """A client of the cluster as system:masters (kubeadm's own admin.conf, say)."""
    return ClusterAPI(from_kubeconfig(standin.kubeconfig(user="kubernetes-admin", groups=("system:masters",))))


@contextlib.asynccontextmanager
async def cluster_api(directory: Path, ca: pki.CertificateAuthority, version: str = "1.30.2") -> AsyncIterator[StandIn]:
    """The cluster's API, as kubeadm init leaves it, for the block."""
    with running(directory, kubernetes_version=version, ca=TestCA.load(directory / "pki", ca.pair.cert_pem,
                                                                      ca.pair.key_pem)) as standin:  # fmt: skip
        async with masters(standin) as api:
            await api.client.create(from_dict(KUBEADM_CLUSTER_ADMINS))
        yield standin


async def install(
    clusters: Any,
    credentials: Any,
    name: str,
    tenant: str,
    *,
    endpoint: str,
    cas: pki.ClusterCAs,
    version: str = "1.30.2",
) -> cluster_pb2.Cluster:
    """Record cluster `name` of `tenant` as installed at `endpoint` ("host:port") with `cas`,
    through the ClusterService and ClusterCredentialService stubs of a platform administrator."""
    c = cluster_pb2.Cluster()
    c.metadata.name, c.metadata.tenant_id = name, tenant
    c.spec.type, c.spec.version = "baremetal", version
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    host, _, port = endpoint.rpartition(":")
    c.spec.control_plane_endpoint.host, c.spec.control_plane_endpoint.port = host, int(port)
    c = await clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
    await credentials.Create(
        credential_pb2.CreateClusterCredentialRequest(cluster_credential=cluster_credentials.to_credential(c, cas))
    )
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    c.status.phase = cluster_pb2.CLUSTER_PHASE_RUNNING
    c.status.version, c.status.control_plane_endpoint = version, endpoint
    c.status.conditions.add(type="Ready", status=meta_pb2.CONDITION_STATUS_TRUE, reason="Created",
                            last_transition_time=now)  # fmt: skip
    installed: cluster_pb2.Cluster = await clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=c))
    return installed
