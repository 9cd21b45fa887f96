"""Who may do what over ipamd's TCP listener: IPAM calls as authorization Attributes, for the
same authenticators and authorizers as the apiserver ([tcp.auth]).

Tenancy:
- Pools are the platform's: creating, updating and deleting one acts in every tenant ("*"),
  which only platform administrators (and all-tenant role bindings) may; reading pools acts in
  the caller's own tenant (any role that may get or list "pools" there).
- A binding, and an allocation, belongs to the tenant that owns its Kubernetes namespace.
  Namespaces are given to tenants in the configuration ([tcp.tenants]: tenant -> namespaces,
  exact names or prefixes ending in "*"); a namespace no tenant owns is the platform's ("*").
  A namespace can never belong to two tenants: overlapping entries are a configuration error.
- A call that names no namespace (Release and GarbageCollect by container or node, lists over
  every namespace, GetAllocation by attachment or address) acts in every tenant ("*"): it is
  for the nodes' CNI plugins and the platform's operators.

The node-local unix socket has no auth chain: its file mode is its access control.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tke.internal.auth.attributes import attributes_for
from tke.internal.auth.authz import Attributes
from tke.internal.auth.identity import Identity
from tke.internal.meta.labels import dns1123_label_error
from tke.ipam.v1 import ipam_pb2

SERVICE = "tke.ipam.v1.IPAMService"
EVERY_TENANT = "*"
_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$|^[a-z0-9][-a-z0-9]{0,61}\*$|^\*$")


class TenancyError(ValueError):
    """[tcp.tenants] is not a valid assignment of namespaces (message for the operator)."""


class NamespaceTenants:
    """Which tenant owns a namespace: exact names first, then the longest matching prefix."""

    def __init__(self, tenants: Mapping[str, Sequence[str]]) -> None:
        self.exact: dict[str, str] = {}
        self.prefixes: list[tuple[str, str]] = []
        for tenant, patterns in tenants.items():
            if err := dns1123_label_error(tenant):
                raise TenancyError(f"tcp.tenants: {tenant!r} is not a tenant name: {err}")
            for pattern in patterns:
                if not _PATTERN.fullmatch(pattern):
                    raise TenancyError(
                        f"tcp.tenants.{tenant}: {pattern!r} is neither a namespace name nor a prefix such as 'shop-*'"
                    )
                if pattern.endswith("*"):
                    self.prefixes.append((pattern[:-1], tenant))
                elif self.exact.setdefault(pattern, tenant) != tenant:
                    raise TenancyError(
                        f"tcp.tenants: namespace {pattern!r} is given to {self.exact[pattern]} and {tenant}"
                    )
        for name, tenant in self.exact.items():
            for prefix, other in self.prefixes:
                if name.startswith(prefix) and other != tenant:
                    raise TenancyError(f"tcp.tenants: namespace {name!r} ({tenant}) matches {prefix}* ({other})")
        for prefix, tenant in self.prefixes:
            for longer, other in self.prefixes:
                if longer != prefix and longer.startswith(prefix) and other != tenant:
                    raise TenancyError(f"tcp.tenants: {longer}* ({other}) overlaps {prefix}* ({tenant})")

    def tenant_of(self, namespace: str) -> str:
        if not namespace:
            return EVERY_TENANT
        if namespace in self.exact:
            return self.exact[namespace]
        matches = [(prefix, tenant) for prefix, tenant in self.prefixes if namespace.startswith(prefix)]
        return max(matches)[1] if matches else EVERY_TENANT


_Rule = Callable[[Any, Identity, NamespaceTenants], tuple[str, str, str, str]]


def _workload(w: ipam_pb2.WorkloadRef) -> str:
    return f"{w.namespace}/{w.kind}/{w.name}"


def _get_allocation(r: ipam_pb2.GetAllocationRequest, t: NamespaceTenants) -> tuple[str, str]:
    if r.WhichOneof("by") == "owner":
        return f"{r.owner.namespace}/{r.owner.pod_name}", t.tenant_of(r.owner.namespace)
    if r.WhichOneof("by") == "address":
        return r.address, EVERY_TENANT
    return f"{r.attachment.container_id}/{r.attachment.ifname}", EVERY_TENANT


# method -> (verb, resource, object name, tenant)
RULES: dict[str, _Rule] = {
    "CreatePool": lambda r, i, t: ("create", "pools", r.pool.name, EVERY_TENANT),
    "UpdatePool": lambda r, i, t: ("update", "pools", r.pool.name, EVERY_TENANT),
    "DeletePool": lambda r, i, t: ("delete", "pools", r.name, EVERY_TENANT),
    "GetPool": lambda r, i, t: ("get", "pools", r.name, i.tenant_id),
    "ListPools": lambda r, i, t: ("list", "pools", "", i.tenant_id),
    "PutBinding": lambda r, i, t: (
        "update",
        "bindings",
        _workload(r.binding.workload),
        t.tenant_of(r.binding.workload.namespace),
    ),
    "GetBinding": lambda r, i, t: ("get", "bindings", _workload(r.workload), t.tenant_of(r.workload.namespace)),
    "LookupBinding": lambda r, i, t: ("get", "bindings", f"{r.namespace}/Pod/{r.pod_name}", t.tenant_of(r.namespace)),
    "ResolveWorkload": lambda r, i, t: ("get", "bindings", f"{r.namespace}/Pod/{r.pod_name}", t.tenant_of(r.namespace)),
    "ListBindings": lambda r, i, t: ("list", "bindings", "", t.tenant_of(r.namespace)),
    "DeleteBinding": lambda r, i, t: ("delete", "bindings", _workload(r.workload), t.tenant_of(r.workload.namespace)),
    "Allocate": lambda r, i, t: (
        "create",
        "allocations",
        f"{r.owner.namespace}/{r.owner.pod_name}",
        t.tenant_of(r.owner.namespace),
    ),
    "Release": lambda r, i, t: ("delete", "allocations", f"{r.container_id}/{r.ifname}", EVERY_TENANT),
    "ReleaseWorkload": lambda r, i, t: (
        "delete",
        "allocations",
        _workload(r.workload),
        t.tenant_of(r.workload.namespace),
    ),
    "GetAllocation": lambda r, i, t: ("get", "allocations", *_get_allocation(r, t)),
    "ListAllocations": lambda r, i, t: ("list", "allocations", "", t.tenant_of(r.namespace)),
    "GarbageCollect": lambda r, i, t: ("delete", "allocations", f"node/{r.node}", EVERY_TENANT),
}


def ipam_attributes(tenants: NamespaceTenants) -> Callable[[str, Any, Identity], Attributes]:
    """The Attributes of a call to ipamd (other services, such as reflection, as anywhere)."""

    def attributes(method_name: str, request: Any, identity: Identity) -> Attributes:
        service, _, method = method_name.lstrip("/").rpartition("/")
        rule = RULES.get(method) if service == SERVICE else None
        if rule is None or not hasattr(request, "DESCRIPTOR"):
            return attributes_for(method_name, request, identity)
        verb, resource, name, tenant = rule(request, identity, tenants)
        return Attributes(identity, verb, resource, name, tenant)

    return attributes
