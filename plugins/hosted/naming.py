"""Where a hosted control plane lives in the meta cluster, and how its objects are labelled.

A cluster's namespace is "<prefix>-<tenant>-<cluster>-<hash>": readable, a DNS label (at most
63 characters: long tenant and cluster names are cut), and unique, since the hash covers the
full tenant and cluster names (tenant "a-b" with cluster "c" and tenant "a" with cluster "b-c"
get different namespaces). The name depends on the tenant and cluster only, so every step and
every controller finds it again; the namespace's `tke.cloud/cluster-uid` label says which
cluster of that name owns it (one deleted and created again waits for the old namespace to go).

The hash is what tells clusters apart once names are cut (tenant "team" with cluster "a-x..."
reads like tenant "team-a" with cluster "x..."), and 40 bits can be ground: a tenant may find a
cluster name whose namespace is another tenant's. So the name is never proof of ownership: a
namespace is a cluster's only when its tenant and cluster labels are that cluster's (`owns`),
and no step takes over or deletes one that is not.

Every object carries `app.kubernetes.io/managed-by: tke-platform` and the tenant, cluster and
cluster uid; workloads select their pods by component name and cluster uid, labels that never
change for the cluster's life (selectors of Deployments and StatefulSets are immutable).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from tke.platform.v1 import cluster_pb2

MANAGED_BY = "app.kubernetes.io/managed-by"
PLATFORM = "tke-platform"
NAME = "app.kubernetes.io/name"
PART_OF = "app.kubernetes.io/part-of"
TENANT = "tke.cloud/tenant"
CLUSTER = "tke.cloud/cluster"
CLUSTER_UID = "tke.cloud/cluster-uid"
# The namespace's annotation: the digest of the objects the platform last applied there.
RENDERED = "tke.cloud/rendered"
PART = "tke-hosted-control-plane"

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
# The endpoint Service (kube-apiserver's), and the headless Service of etcd's members.
ENDPOINT_SERVICE = APISERVER
ETCD_SERVICE = ETCD


def namespace(cluster: cluster_pb2.Cluster, prefix: str = "tke") -> str:
    tenant, name = cluster.metadata.tenant_id or "default", cluster.metadata.name
    digest = hashlib.sha256(f"{tenant}/{name}".encode()).hexdigest()[:10]
    room = 63 - len(prefix) - len(digest) - 3
    tenant_part = tenant[: max(room // 2, room - len(name))].rstrip("-")
    name_part = name[: room - len(tenant_part)].rstrip("-")
    return f"{prefix}-{tenant_part}-{name_part}-{digest}"


def labels(cluster: cluster_pb2.Cluster) -> dict[str, str]:
    """What every object of the cluster carries."""
    return {
        MANAGED_BY: PLATFORM,
        TENANT: cluster.metadata.tenant_id or "default",
        CLUSTER: cluster.metadata.name,
        CLUSTER_UID: cluster.metadata.uid,
    }


def owns(cluster: cluster_pb2.Cluster, namespace_labels: Mapping[str, str]) -> bool:
    """Whether a namespace with these labels is the platform's for this tenant's cluster of this
    name (any uid: an earlier cluster of the same name is the same tenant's)."""
    wanted = labels(cluster)
    return all(namespace_labels.get(key) == wanted[key] for key in (MANAGED_BY, TENANT, CLUSTER))


def selector(cluster: cluster_pb2.Cluster, component: str) -> dict[str, str]:
    """The pods of one component of the cluster."""
    return {NAME: component, CLUSTER_UID: cluster.metadata.uid}


def component_labels(cluster: cluster_pb2.Cluster, component: str) -> dict[str, str]:
    return {**labels(cluster), NAME: component, PART_OF: PART}
