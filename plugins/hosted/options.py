"""The hosted provider's options (`[cluster_providers.hosted.options]` of tke-controller), and the
images of each component for a Kubernetes version.

The options belong to the operator: they say where the meta cluster is and how control planes
are laid out in it. A cluster's spec says only what it is (version, network, extra args of
its components). The provider is constructed with its defaults wherever it is loaded without
a configuration (the apiserver's validation, a controller configured for other providers), so
no option is required at construction: a step without a meta cluster fails saying which option
to set. Once a meta cluster is configured (kubeconfig_file), its pod and service networks are
required too, unless network_policy is off: without them the control planes' NetworkPolicies
would let each reach every other (network_policy.py).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tke.internal.meta.labels import label_value_error, qualified_name_error
from tke.internal.provider.kube.config import minor
from tke.plugins.hosted import naming

SERVICE_TYPES = ("LoadBalancer", "NodePort")
ETCD_MEMBERS = (1, 3, 5)
# The etcd kubeadm installs with each Kubernetes minor version (its SupportedEtcdVersion);
# versions past the table use the last one.
ETCD_VERSIONS = {(1, 29): "3.5.21-0", (1, 30): "3.5.21-0", (1, 31): "3.5.21-0", (1, 32): "3.5.21-0"}
ETCD_LATEST = "3.6.5-0"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_SUFFIXES = {
    "": 1, "m": 10**-3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_RESOURCE_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
# What each control-plane container asks for (requests: what the meta cluster's scheduler
# reserves for it) and may take at most (limits). Memory is limited: a tenant's etcd or API
# server grows with what the tenant stores and asks (objects, watches, big lists), and without
# a limit one tenant's control plane takes its node's memory from every other tenant's on that
# node; over its limit it is OOM-killed alone. CPU is not limited by default: a limit throttles
# a busy API server or etcd (CFS quota) even when the node is idle, which shows as timeouts and
# lost leader leases, while under contention CPU is shared in proportion to requests anyway, so
# a busy tenant takes only idle CPU from the others. An operator who prefers hard CPU bounds
# sets `limits.cpu` per component.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
DEFAULT_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "etcd": {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"memory": "4Gi"}},
    "kube-apiserver": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    "kube-controller-manager": {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    "kube-scheduler": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
}


def quantity(value: str) -> float | None:
    """A Kubernetes quantity ("250m", "2Gi", "1.5") as a number, or None if it is not one."""
    found = _RESOURCE_QUANTITY.fullmatch(value) if isinstance(value, str) else None
    return None if found is None else float(found[1]) * _SUFFIXES[found[2] or ""]


def _resource_problems(given: Mapping[str, Mapping[str, Mapping[str, str]]]) -> list[str]:
    problems = []
    for component, kinds in given.items():
        if component not in COMPONENTS or not isinstance(kinds, Mapping):
            problems.append(f"resources: {component!r} is not one of {', '.join(COMPONENTS)} with a table")
            continue
        for kind, values in kinds.items():
            if kind not in ("requests", "limits") or not isinstance(values, Mapping):
                problems.append(f"resources.{component}: {kind!r} is not a table requests or limits")
                continue
            for name, value in values.items():
                if name not in ("cpu", "memory"):
                    problems.append(f"resources.{component}.{kind}: {name!r} is not cpu or memory")
                elif quantity(value) is None:
                    problems.append(f"resources.{component}.{kind}.{name}: {value!r} is not a quantity such as 2Gi")
    return problems


# The networks a control plane's pods must not reach (network_policy.py): each a list of CIDRs.
CIDR_OPTIONS = ("meta_pod_cidrs", "meta_service_cidrs", "denied_egress_cidrs", "allowed_link_local_cidrs")
# Denied to every control plane's pods whatever the options say: link-local addresses, where a
# cloud's instance metadata service answers (169.254.169.254, and EC2's IPv6 one, fd00:ec2::254,
# which is no link-local address) and hands out the credentials of the meta cluster's nodes. A
# tenant makes its API server dial what it chooses (webhooks, aggregated APIs, the service proxy):
# without this, every tenant could read them. `allowed_link_local_cidrs` gives back parts of
# these networks (a NodeLocal DNSCache's 169.254.20.10/32), never more.
LINK_LOCAL = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")
# The label Kubernetes sets on every namespace (its name), and those the platform sets on every
# control plane's namespace (naming.labels): `metrics_namespace_labels` must not select one.
_NAMESPACE_NAME = "kubernetes.io/metadata.name"
_PLATFORM_KEYS = (naming.MANAGED_BY, naming.TENANT, naming.CLUSTER, naming.CLUSTER_UID)


def _cidr_problems(name: str, given: Sequence[str]) -> list[str]:
    """Each entry of a CIDR option a network address ("10.244.0.0/16"): a host address with a
    prefix ("10.244.0.1/16") is refused rather than widened, and a /0 would leave no
    destination outside (NetworkPolicy's `except` must lie strictly inside 0.0.0.0/0 or ::/0).
    Types are the configuration loader's to check (the provider reads its options with them)."""
    problems = []
    for entry in given:
        try:
            network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            network = None
        if network is None or "/" not in entry:
            problems.append(f"{name}: {entry!r} is not a CIDR such as 10.244.0.0/16")
        elif str(network) != entry:
            problems.append(f"{name}: {entry!r} is not a network address as Kubernetes writes it: {network}")
        elif network.prefixlen == 0:
            problems.append(f"{name}: {entry!r} is every address (the control planes need the tenants' nodes)")
    return problems


def _metrics_selector_problems(given: Mapping[str, str], prefix: str) -> list[str]:
    name = "metrics_namespace_labels"
    problems = []
    for key, value in given.items():
        error = qualified_name_error(key) or label_value_error(value)
        if error:
            problems.append(f"{name}: {key!r}: {error}")
        elif key in _PLATFORM_KEYS:
            # Every control plane's namespace carries them, with values tenants choose.
            problems.append(f"{name}: {key!r} would select the control planes' own namespaces")
        elif key == _NAMESPACE_NAME and value.startswith(f"{prefix}-"):
            problems.append(f"{name}: {value!r} is a name of the control planes' namespaces ({prefix}-...)")
    return problems


@dataclass(frozen=True)
class HostedOptions:
    # The meta cluster: a kubeconfig file of the operator's (read when used, so a rotated
    # credential is picked up; exec plugins may run), and its context (empty: current-context).
    kubeconfig_file: str = ""
    kubeconfig_context: str = ""
    # Seconds each call to the meta cluster may take.
    timeout: float = 10.0
    # The cluster's endpoint: a Service of this type in front of the API servers. A
    # LoadBalancer's address is its first ingress (IP or host name) and `port`; a NodePort's is
    # `node_port_host` (a name or VIP in front of the meta cluster's nodes) and the node port,
    # or, without it, the address of the first Ready node of the meta cluster.
    service_type: str = "LoadBalancer"
    port: int = 6443
    node_port_host: str = ""
    # Annotations of that Service (a cloud's load balancer settings).
    service_annotations: Mapping[str, str] = field(default_factory=dict)
    # Members and replicas. etcd's member count applies to new clusters: an existing cluster
    # keeps its own (etcd members are not added or removed by changing a StatefulSet).
    etcd_replicas: int = 3
    apiserver_replicas: int = 2
    controller_manager_replicas: int = 2
    scheduler_replicas: int = 2
    # etcd's volume of each member.
    etcd_storage_size: str = "8Gi"
    etcd_storage_class: str = ""
    # Where images come from (your mirror of registry.k8s.io), and versions other than kubeadm's.
    image_repository: str = "registry.k8s.io"
    etcd_version: str = ""
    # The meta cluster's DNS domain (the components reach each other by Service names in it).
    meta_dns_domain: str = "cluster.local"
    # More names or addresses for the API server certificate (a DNS name in front of it).
    extra_sans: Sequence[str] = ()
    # Namespaces are named "<prefix>-<tenant>-<cluster>-<hash>".
    namespace_prefix: str = "tke"
    # Requests and limits per component, over DEFAULT_RESOURCES: {"kube-apiserver": {"limits":
    # {"memory": "4Gi", "cpu": "2"}}} changes only those two. A memory limit stays required.
    resources: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    # NetworkPolicies in every control plane's namespace (network_policy.py): off only for a meta
    # cluster whose network plugin does not enforce them. With them, the meta cluster's pod and
    # service networks are required (where a control plane's pods must not connect: other
    # tenants' control planes, the meta cluster's own services), and `denied_egress_cidrs` are
    # more such networks (the meta cluster's nodes, a cloud's metadata service, ...).
    network_policy: bool = True
    meta_pod_cidrs: Sequence[str] = ()
    meta_service_cidrs: Sequence[str] = ()
    denied_egress_cidrs: Sequence[str] = ()
    # Parts of LINK_LOCAL the control planes' pods may reach after all (a NodeLocal DNSCache's
    # address); empty: none of them.
    allowed_link_local_cidrs: Sequence[str] = ()
    # Labels of the namespace(s) whose pods may scrape etcd's metrics port and the
    # controller-manager's and scheduler's ports (a monitoring namespace); empty: none.
    metrics_namespace_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.service_type not in SERVICE_TYPES:
            problems.append(f"service_type must be one of {', '.join(SERVICE_TYPES)}, not {self.service_type!r}")
        if not 1 <= self.port <= 65535:
            problems.append(f"port must be between 1 and 65535, not {self.port}")
        if self.etcd_replicas not in ETCD_MEMBERS:
            problems.append(f"etcd_replicas must be 1, 3 or 5 (a quorum), not {self.etcd_replicas}")
        for name in ("apiserver_replicas", "controller_manager_replicas", "scheduler_replicas"):
            if not 1 <= getattr(self, name) <= 10:
                problems.append(f"{name} must be between 1 and 10")
        if not _QUANTITY.fullmatch(self.etcd_storage_size):
            problems.append(f"etcd_storage_size {self.etcd_storage_size!r} is not a quantity such as 8Gi")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", self.namespace_prefix):
            problems.append("namespace_prefix must be a DNS label of at most 10 characters")
        if self.timeout <= 0:
            problems.append("timeout must be positive")
        problems += _resource_problems(self.resources)
        problems += self._network_policy_problems()
        if not problems:
            for component in COMPONENTS:
                wanted = self.component_resources(component)
                for name, limit in wanted["limits"].items():
                    request = wanted["requests"].get(name)
                    if request is not None and (quantity(request) or 0) > (quantity(limit) or 0):
                        problems.append(
                            f"resources.{component}: requests.{name} {request} is more than limits.{name} {limit}"
                        )
        if problems:
            raise ValueError("hosted provider options: " + "; ".join(problems))

    def _network_policy_problems(self) -> list[str]:
        problems = [p for name in CIDR_OPTIONS for p in _cidr_problems(name, getattr(self, name))]
        problems += _metrics_selector_problems(self.metrics_namespace_labels, self.namespace_prefix)
        if not problems:
            problems += self._link_local_problems()
        if self.network_policy and self.kubeconfig_file and not problems:
            # A meta cluster is configured: without its networks, the policies would let every
            # control plane reach every other one (an ipBlock of 0.0.0.0/0 takes in pod IPs).
            missing = [name for name in ("meta_pod_cidrs", "meta_service_cidrs") if not getattr(self, name)]
            if missing:
                problems.append(
                    f"{' and '.join(missing)} must name the meta cluster's networks (the control planes' "
                    "NetworkPolicies keep their pods out of them), or set network_policy = false for a meta "
                    "cluster whose network plugin does not enforce NetworkPolicy"
                )
        return problems

    def _link_local_problems(self) -> list[str]:
        name = "allowed_link_local_cidrs"
        link_local = [ipaddress.ip_network(n) for n in LINK_LOCAL]
        denied = [ipaddress.ip_network(n) for n in self._configured_denied()]
        problems = []
        for entry in self.allowed_link_local_cidrs:
            network = ipaddress.ip_network(entry)
            if not any(network.version == n.version and network.subnet_of(n) for n in link_local):  # type: ignore[arg-type]
                problems.append(f"{name}: {entry!r} is not inside {', '.join(LINK_LOCAL)} (it gives back parts of "
                                "those only)")  # fmt: skip
                continue
            inside = [str(d) for d in denied if d.version == network.version and network.subnet_of(d)]  # type: ignore[arg-type]
            if inside:
                problems.append(f"{name}: {entry!r} is inside {inside[0]}, which another option denies")
        return problems

    def _configured_denied(self) -> list[str]:
        return list(dict.fromkeys([*self.meta_pod_cidrs, *self.meta_service_cidrs, *self.denied_egress_cidrs]))

    def denied_egress(self) -> list[str]:
        """Every network a control plane's pods must not reach: the options', in their order, then
        LINK_LOCAL's not inside one of them, once each."""
        configured = self._configured_denied()
        networks = [ipaddress.ip_network(n) for n in configured]
        more = [
            n
            for n in LINK_LOCAL
            if not any(
                d.version == ipaddress.ip_network(n).version and ipaddress.ip_network(n).subnet_of(d)  # type: ignore[arg-type]
                for d in networks
            )
        ]
        return configured + more

    def component_resources(self, component: str) -> dict[str, dict[str, str]]:
        """A container's `resources`: DEFAULT_RESOURCES with the option's values over them."""
        given = self.resources.get(component, {})
        return {kind: {**DEFAULT_RESOURCES[component][kind], **given.get(kind, {})} for kind in ("requests", "limits")}

    def image(self, component: str, version: str) -> str:
        """The image of a Kubernetes component (kube-apiserver, kube-proxy, ...) at `version`."""
        return f"{self.image_repository}/{component}:v{version.lstrip('v')}"

    def etcd_image(self, version: str) -> str:
        tag = self.etcd_version or ETCD_VERSIONS.get(minor(version), ETCD_LATEST)
        return f"{self.image_repository}/etcd:{tag}"
