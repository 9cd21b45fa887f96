"""The control-plane endpoint: the one address every node, certificate, kubeconfig and join of
a cluster uses to reach its API servers.

Three ways to get one, from the cluster spec:
- an operator's load balancer or VIP: spec.control_plane_endpoint (host, port 6443 by default);
- a VIP the platform runs on the masters: spec.control_plane_vip (keepalived moves the address,
  haproxy on each master forwards to every API server; port 8443 by default, since the API
  servers keep 6443 on the same machines);
- neither, with a single master: that master's address and 6443.
Several masters without either is refused: a first master's address would make the cluster
only as available as that machine.

Once the cluster is installed the endpoint is recorded in status.control_plane_endpoint and
never changes: certificates and every kubelet point at it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import cluster_pb2

API_PORT = 6443
VIP_PORT = 8443
VIP_ROUTER_ID = 51


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    managed_vip: bool = False

    @property
    def address(self) -> str:
        """host:port, as kubeadm's controlPlaneEndpoint and apiServerEndpoint take it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.address}"


def parse(address: str) -> Endpoint:
    host, _, port = address.rpartition(":")
    return Endpoint(host.strip("[]"), int(port))


def wanted(cluster: cluster_pb2.Cluster) -> Endpoint | None:
    """The endpoint the spec asks for (None: the spec does not name one)."""
    spec = cluster.spec
    if spec.HasField("control_plane_endpoint") and spec.control_plane_endpoint.host:
        e = spec.control_plane_endpoint
        return Endpoint(e.host, e.port or API_PORT)
    if spec.HasField("control_plane_vip") and spec.control_plane_vip.address:
        v = spec.control_plane_vip
        return Endpoint(v.address, v.port or VIP_PORT, managed_vip=True)
    if len(spec.machines) == 1:
        return Endpoint(spec.machines[0].ip, API_PORT)
    return None  # several masters: the spec must name one (violations), or it was recorded


def of(cluster: cluster_pb2.Cluster) -> Endpoint:
    """The cluster's endpoint: the recorded one once installed, else the spec's."""
    managed = cluster.spec.HasField("control_plane_vip") and bool(cluster.spec.control_plane_vip.address)
    if cluster.status.control_plane_endpoint:
        recorded = parse(cluster.status.control_plane_endpoint)
        return Endpoint(recorded.host, recorded.port, managed_vip=managed)
    found = wanted(cluster)
    if found is None:
        raise ValueError(f"cluster {cluster.metadata.name} has no control-plane endpoint")
    return found


def violations(cluster: cluster_pb2.Cluster) -> list[FieldViolation]:
    spec = cluster.spec
    out: list[FieldViolation] = []
    given = spec.HasField("control_plane_endpoint") and bool(spec.control_plane_endpoint.host)
    vip = spec.HasField("control_plane_vip") and (
        bool(spec.control_plane_vip.address) or bool(spec.control_plane_vip.interface)
    )
    if given and vip:
        out.append(
            FieldViolation(
                "cluster.spec.control_plane_vip", "set control_plane_endpoint (your load balancer) or this, not both"
            )
        )
    if given:
        e = spec.control_plane_endpoint
        if not _host_ok(e.host):
            out.append(
                FieldViolation("cluster.spec.control_plane_endpoint.host", f"{e.host!r} is not an IP or DNS name")
            )
        if not 0 <= e.port <= 65535:
            out.append(FieldViolation("cluster.spec.control_plane_endpoint.port", "must be between 1 and 65535"))
    if vip:
        v = spec.control_plane_vip
        path = "cluster.spec.control_plane_vip"
        try:
            address = ipaddress.ip_address(v.address)
            if bare_ip(v.address) is None:
                out.append(FieldViolation(f"{path}.address", f"{v.address!r} has a zone (%...): give it alone"))
            if any(m.ip == v.address for m in spec.machines):
                out.append(FieldViolation(f"{path}.address", "must be a free address, not a control-plane machine's"))
            if address.is_loopback or address.is_unspecified or address.is_multicast:
                out.append(FieldViolation(f"{path}.address", f"{v.address} cannot be a virtual IP"))
        except ValueError:
            out.append(FieldViolation(f"{path}.address", "is required: an unused IP address of the masters' subnet"))
        if (
            not v.interface
            or len(v.interface) > 15
            or not v.interface.isascii()  # a Linux name is 15 bytes; keepalived.conf is text
            or not v.interface.replace("-", "").replace(".", "").isalnum()
        ):
            out.append(FieldViolation(f"{path}.interface", "is required: the network interface name, such as eth0"))
        if not 0 <= v.virtual_router_id <= 255:
            out.append(FieldViolation(f"{path}.virtual_router_id", "must be between 1 and 255"))
        if not 0 <= v.port <= 65535 or v.port == API_PORT:
            out.append(FieldViolation(f"{path}.port", "must be a free port (6443 is the API servers')"))
    recorded = cluster.status.control_plane_endpoint
    if not given and not vip and len(spec.machines) > 1 and not recorded:
        out.append(
            FieldViolation(
                "cluster.spec.control_plane_endpoint",
                "several control-plane machines need an endpoint in front of them: control_plane_endpoint "
                "(your load balancer) or control_plane_vip (a VIP the platform runs on the masters)",
            )
        )
    if recorded and not out:
        if given or vip:
            now = wanted(cluster)
            if now is None or now.address != recorded:
                out.append(
                    FieldViolation(
                        "cluster.spec.control_plane_endpoint",
                        f"the cluster was installed with endpoint {recorded}; it cannot change (every certificate "
                        "and node points at it)",
                    )
                )
        elif parse(recorded).host not in {m.ip for m in spec.machines}:
            # Installed with its single master's address as the endpoint: that machine must stay.
            out.append(
                FieldViolation(
                    "cluster.spec.machines",
                    f"{parse(recorded).host} is the cluster's API endpoint (it was installed without "
                    "control_plane_endpoint); it cannot leave spec.machines",
                )
            )
    return out


def bare_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`value` as an address, None unless it is one without an IPv6 zone. Python reads any text
    after "%" as a zone ("fe80::1%eth0"), newlines and shell characters included, and these
    addresses go into commands and configuration files (haproxy.cfg, keepalived.conf)."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    return None if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None else ip


def _host_ok(host: str) -> bool:
    if "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        labels = host.rstrip(".").split(".")
        return 0 < len(host) <= 253 and all(
            0 < len(x) <= 63 and x.replace("-", "").isalnum() and x[0] != "-" and x[-1] != "-" for x in labels
        )
