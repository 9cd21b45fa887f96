"""The NetworkPolicies (networking.k8s.io/v1) of one control plane's namespace in the meta
cluster: every tenant's control plane shares the meta cluster's network, and a tenant, cluster
admin of its own kube-apiserver, makes that server dial what it chooses (the service and node
proxy to Endpoints of its choosing, webhooks, aggregated APIs, an OIDC issuer). These policies
are the rule that no control plane reaches another's pods, and no one else reaches its etcd:

- `isolation` selects every pod of the namespace: no ingress but what the policies below allow,
  and egress only to the namespace's own pods, to the meta cluster's DNS (kube-system's pods
  `k8s-app: kube-dns`, UDP and TCP 53), and to any address outside the meta cluster's pod and
  service networks, `denied_egress_cidrs` and link-local addresses (options.LINK_LOCAL: a cloud's
  metadata service; an ipBlock 0.0.0.0/0, and ::/0, with those networks as its `except`): the
  tenant's worker nodes (kubelet, for logs and exec), its OIDC issuer, webhooks outside; and the
  parts of LINK_LOCAL in `allowed_link_local_cidrs` (a NodeLocal DNSCache);
- `etcd`: its client port from the namespace's kube-apiserver pods, its peer port from the
  namespace's etcd pods, its metrics port (plain HTTP) from the namespace's pods and the
  monitoring namespaces (`metrics_namespace_labels`);
- `kube-apiserver`: its port from anywhere (nodes and users reach it through the endpoint
  Service, a LoadBalancer or NodePort, whose traffic may come from any address, the node's
  after source NAT included); the controller-manager and scheduler reach it this way too;
- `kube-controller-manager`, `kube-scheduler`: their ports from the monitoring namespaces only.

Kubernetes allows a connection when the source's egress policies and the destination's
ingress policies both allow it (the union of every policy selecting a pod). Ports and pod
selectors are the ones the workloads are rendered with (plan.py's ports, naming.selector), so
the policies select exactly the control plane's pods and open exactly their ports.
What the policies guarantee, and what they rely on, is in docs/providers.md.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tke.plugins.hosted import naming
from tke.plugins.hosted.plan import (
    CONTROLLER_MANAGER_PORT,
    ETCD_CLIENT_PORT,
    ETCD_METRICS_PORT,
    ETCD_PEER_PORT,
    SCHEDULER_PORT,
    Plan,
)

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
ISOLATION = "isolation"
# Every policy the platform may put in a namespace: those not rendered (network_policy = false)
# are deleted by name, so the platform needs no right to list them.
NAMES = (ISOLATION, naming.ETCD, naming.APISERVER, naming.CONTROLLER_MANAGER, naming.SCHEDULER)
# The meta cluster's DNS: CoreDNS (or kube-dns) as kubeadm and most distributions label it.
NAMESPACE_NAME = "kubernetes.io/metadata.name"
DNS_NAMESPACE = "kube-system"
DNS_PODS = {"k8s-app": "kube-dns"}
DNS_PORT = 53
EVERYWHERE = {4: "0.0.0.0/0", 6: "::/0"}


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _pods(plan: Plan, component: str) -> dict[str, Any]:
    """A peer: the pods of one component of this namespace's control plane."""
    return {"podSelector": {"matchLabels": naming.selector(plan.cluster, component)}}


def _monitoring(plan: Plan) -> list[dict[str, Any]]:
    labels = plan.options.metrics_namespace_labels
    return [{"namespaceSelector": {"matchLabels": dict(labels)}}] if labels else []


def _policy(plan: Plan, name: str, labels: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": plan.namespace, "labels": labels},
        "spec": spec,
    }


def _component(plan: Plan, component: str, ingress: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": naming.selector(plan.cluster, component)},
        "policyTypes": ["Ingress"],
    }
    if ingress:
        spec["ingress"] = ingress
    return _policy(plan, component, naming.component_labels(plan.cluster, component), spec)


def _outside(plan: Plan) -> list[dict[str, Any]]:
    """ipBlocks of every address but the denied networks, one per IP family."""
    denied = [ipaddress.ip_network(cidr) for cidr in plan.options.denied_egress()]
    out = []
    for family, everything in EVERYWHERE.items():
        block: dict[str, Any] = {"cidr": everything}
        excepted = [str(n) for n in denied if n.version == family]
        if excepted:
            block["except"] = excepted
        out.append({"ipBlock": block})
    return out


def _given_back(plan: Plan) -> list[dict[str, Any]]:
    """ipBlocks of `allowed_link_local_cidrs`, each without the configured networks inside it
    (policies add up: a block must not open what another option denies)."""
    denied = [ipaddress.ip_network(cidr) for cidr in plan.options.denied_egress()]
    out = []
    for cidr in plan.options.allowed_link_local_cidrs:
        allowed = ipaddress.ip_network(cidr)
        block: dict[str, Any] = {"cidr": cidr}
        inside = [str(d) for d in denied if d.version == allowed.version and d != allowed and d.subnet_of(allowed)]  # type: ignore[arg-type]
        if inside:
            block["except"] = inside
        out.append({"ipBlock": block})
    return out


def isolation(plan: Plan) -> dict[str, Any]:
    dns = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME: DNS_NAMESPACE}},
        "podSelector": {"matchLabels": dict(DNS_PODS)},
    }
    spec = {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "egress": [
            {"to": [{"podSelector": {}}]},
            {"to": [dns], "ports": [{"protocol": "UDP", "port": DNS_PORT}, _tcp(DNS_PORT)]},
            {"to": [*_outside(plan), *_given_back(plan)]},
        ],
    }
    return _policy(plan, ISOLATION, naming.labels(plan.cluster), spec)


def policies(plan: Plan) -> list[dict[str, Any]]:
    """Every NetworkPolicy of the namespace (none with network_policy = false)."""
    if not plan.options.network_policy:
        return []
    monitoring = _monitoring(plan)
    etcd = [
        {"from": [_pods(plan, naming.APISERVER)], "ports": [_tcp(ETCD_CLIENT_PORT)]},
        {"from": [_pods(plan, naming.ETCD)], "ports": [_tcp(ETCD_PEER_PORT)]},
        {"from": [{"podSelector": {}}, *monitoring], "ports": [_tcp(ETCD_METRICS_PORT)]},
    ]
    metrics = {
        component: [{"from": monitoring, "ports": [_tcp(port)]}] if monitoring else []
        for component, port in ((naming.CONTROLLER_MANAGER, CONTROLLER_MANAGER_PORT),
                                (naming.SCHEDULER, SCHEDULER_PORT))
    }  # fmt: skip
    return [
        isolation(plan),
        _component(plan, naming.ETCD, etcd),
        _component(plan, naming.APISERVER, [{"ports": [_tcp(plan.secure_port)]}]),
        *(_component(plan, component, rules) for component, rules in metrics.items()),
    ]


def stale(plan: Plan) -> list[dict[str, Any]]:
    """References to the platform's policies of the namespace that `policies` does not render."""
    wanted = {p["metadata"]["name"] for p in policies(plan)}
    return [
        {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "namespace": plan.namespace}}
        for name in NAMES
        if name not in wanted
    ]
