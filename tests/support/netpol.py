"""A small evaluator of Kubernetes NetworkPolicy (networking.k8s.io/v1) objects, for tests that
check what rendered policies allow: nothing installed here evaluates policies (a network
plugin does, in a real cluster), so this follows the rules of the Kubernetes reference
(concepts/services-networking/network-policies, and the API reference of NetworkPolicySpec),
only those the platform's policies rely on:

- a pod is isolated for ingress (egress) when a policy of its namespace selects it (podSelector;
  {} selects every pod) and lists Ingress (Egress) in policyTypes; policyTypes defaults to
  Ingress, plus Egress when the policy has egress rules. A pod that is not isolated in a
  direction allows everything in it;
- an isolated pod allows what any rule of any policy selecting it allows (policies add up); a
  rule allows a peer and a port when its from/to is missing or empty or one of its peers
  matches, and its ports are missing or empty or one of them matches;
- a peer: podSelector alone selects pods of the policy's namespace; namespaceSelector alone
  every pod of the selected namespaces; both, the pods selected in those namespaces; ipBlock an
  address within `cidr` and none of `except`;
- a port: protocol (TCP by default) and the number, a name (the destination container's port
  of that name) or a range up to endPort; none given: every port of the protocol;
- label selectors: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist), ANDed;
- namespaces carry `kubernetes.io/metadata.name` (the control plane sets it);
- a connection is allowed when the source pod's egress and the destination pod's ingress both
  allow it (an address that is no pod has no policy of its own).

Whether an ipBlock matches a pod's own IP is left to the network plugin by the reference (ipBlocks
"should be cluster-external IPs"): `ipblocks_match_pods` says which way to evaluate, so a test
checks both. Services are not modelled: a connection is to the address after the Service's
translation (a pod), or to an address that is none of the modelled pods (an outside address).
Named ports resolve against the destination pod's declared container ports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # Declared container ports: (name, number, protocol).
    ports: tuple[tuple[str, int, str], ...] = ()


@dataclass(frozen=True)
class Address:
    """An address that is no pod of the model (outside the meta cluster, or a Service's IP)."""

    ip: str


Endpoint = Pod | Address


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector matches labels ({} matches everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


class Cluster:
    def __init__(
        self,
        namespaces: Mapping[str, Mapping[str, str]],
        pods: Iterable[Pod],
        policies: Iterable[Mapping[str, Any]],
        *,
        ipblocks_match_pods: bool,
    ) -> None:
        self.namespaces = {name: {**labels, NAMESPACE_NAME: name} for name, labels in namespaces.items()}
        self.pods = list(pods)
        self.policies = list(policies)
        self.ipblocks_match_pods = ipblocks_match_pods
        for p in self.policies:
            assert p["apiVersion"] == "networking.k8s.io/v1" and p["kind"] == "NetworkPolicy", p

    def _types(self, policy: Mapping[str, Any]) -> list[str]:
        spec = policy["spec"]
        return list(spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]))

    def selecting(self, pod: Pod, direction: str) -> list[Mapping[str, Any]]:
        """The policies that select `pod` for "Ingress" or "Egress"."""
        return [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == pod.namespace
            and selects(p["spec"].get("podSelector"), pod.labels)
            and direction in self._types(p)
        ]

    def _peer(self, peer: Mapping[str, Any], policy_namespace: str, other: Endpoint) -> bool:
        if "ipBlock" in peer:
            if isinstance(other, Pod) and not self.ipblocks_match_pods:
                return False
            ip = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            inside = ip in ipaddress.ip_network(block["cidr"])
            return inside and not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
        if not isinstance(other, Pod):
            return False  # pod and namespace selectors select pods only
        if "namespaceSelector" in peer:
            namespace_ok = selects(peer["namespaceSelector"], self.namespaces[other.namespace])
        else:
            namespace_ok = other.namespace == policy_namespace
        return namespace_ok and selects(peer.get("podSelector"), other.labels)

    @staticmethod
    def _port(rule_port: Mapping[str, Any], destination: Endpoint, port: int, protocol: str) -> bool:
        if rule_port.get("protocol", "TCP") != protocol:
            return False
        wanted = rule_port.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            named = destination.ports if isinstance(destination, Pod) else ()
            return any(n == wanted and number == port and proto == protocol for n, number, proto in named)
        return bool(wanted <= port <= rule_port.get("endPort", wanted))

    def _allows(
        self, pod: Pod, direction: str, other: Endpoint, *, destination: Endpoint, port: int, protocol: str
    ) -> bool:
        policies = self.selecting(pod, direction)
        if not policies:
            return True  # not isolated in this direction
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key) or []
                ports = rule.get("ports") or []
                if peers and not any(self._peer(p, policy["metadata"]["namespace"], other) for p in peers):
                    continue
                if ports and not any(self._port(p, destination, port, protocol) for p in ports):
                    continue
                return True
        return False

    def allowed(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        """Whether a connection from `source` to `destination` on `port` is allowed."""
        if isinstance(source, Pod) and not self._allows(
            source, "Egress", destination, destination=destination, port=port, protocol=protocol
        ):
            return False
        if isinstance(destination, Pod):
            return self._allows(destination, "Ingress", source, destination=destination, port=port, protocol=protocol)
        return True
