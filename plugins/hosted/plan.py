"""What one hosted control plane is rendered from: the cluster, the provider's options, its
namespace, its endpoint, and the names by which its components reach each other inside the
meta cluster (Service DNS names, which the components' certificates carry)."""

from __future__ import annotations

from dataclasses import dataclass

from tke.internal.provider.endpoint import Endpoint
from tke.platform.v1 import cluster_pb2
from tke.plugins.hosted import naming
from tke.plugins.hosted.options import HostedOptions

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_METRICS_PORT = 2381
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259


@dataclass(frozen=True)
class Plan:
    cluster: cluster_pb2.Cluster
    options: HostedOptions
    namespace: str
    # Where nodes and users reach the API servers (status.control_plane_endpoint).
    endpoint: Endpoint
    # The port kube-apiserver listens on in its pods: the endpoint's port, so that the address
    # it advertises (the `kubernetes` Service's endpoints in the cluster) is the endpoint.
    secure_port: int
    etcd_members: int

    @property
    def version(self) -> str:
        return self.cluster.spec.version.lstrip("v")

    def service_host(self, service: str) -> str:
        """A Service's name in the meta cluster's DNS."""
        return f"{service}.{self.namespace}.svc.{self.options.meta_dns_domain}"

    def service_names(self, service: str) -> list[str]:
        """Every name a pod of the namespace may use for a Service, for certificates."""
        ns = self.namespace
        return [service, f"{service}.{ns}", f"{service}.{ns}.svc", self.service_host(service)]

    @property
    def internal_url(self) -> str:
        """kube-apiserver inside the meta cluster (the controller-manager's and scheduler's)."""
        return f"https://{self.service_host(naming.ENDPOINT_SERVICE)}:{self.options.port}"

    def etcd_member(self, i: int) -> str:
        return f"{naming.ETCD}-{i}"

    def etcd_member_host(self, i: int) -> str:
        """A member's stable name (StatefulSet pod behind the headless Service)."""
        return f"{self.etcd_member(i)}.{self.service_host(naming.ETCD_SERVICE)}"

    @property
    def etcd_client_urls(self) -> list[str]:
        return [f"https://{self.etcd_member_host(i)}:{ETCD_CLIENT_PORT}" for i in range(self.etcd_members)]
