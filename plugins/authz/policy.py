"""The built-in policy centre: roles and role bindings per tenant, stored in etcd, managed
through PolicyService, enforced by this authorizer. Entry point `policy` of `tke.authz`.

Decisions:
- ALLOW when a binding in the call's tenant (or a binding with all_tenants) names the caller
  or one of its groups and its role has a rule matching the verb, the resource and, when the
  rule lists names, the object's name.
- NO_OPINION otherwise, with the reason, so that another authorizer may still allow; the union
  denies when nobody does.
- Members of tke:platform-admins are admins of every tenant (a built-in binding).
Built-in roles exist in every tenant without being stored: admin (everything), editor
(every verb on clusters, machines and events but get-admin-kubeconfig: a kubeconfig, not
cluster-admin in the cluster), viewer (get, list, watch on everything: no kubeconfig).
Roles and bindings are mirrored in memory, so a decision never waits for etcd.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import grpc

from tke.auth.v1 import policy_pb2, policy_pb2_grpc
from tke.internal.apiserver.api import ResourceAPI
from tke.internal.apiserver.registry import Kind, Registry
from tke.internal.apiserver.validation import validate_metadata
from tke.internal.auth.authz import Attributes, Decision
from tke.internal.auth.identity import PLATFORM_ADMINS, current_identity
from tke.internal.rpc import errors
from tke.internal.rpc.errors import FieldViolation
from tke.internal.storage.mirror import Mirror

VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "update-status", "delete", "logout", "get-kubeconfig",
     "get-admin-kubeconfig", "*"}
)  # fmt: skip
EDITOR_VERBS = ["get", "list", "watch", "create", "update", "update-status", "delete", "get-kubeconfig"]
_RESOURCE = re.compile(r"^(\*|[a-z][a-z0-9-]{0,62})$")

BUILTIN_ROLES: dict[str, list[policy_pb2.PolicyRule]] = {
    "admin": [policy_pb2.PolicyRule(verbs=["*"], resources=["*"])],
    "editor": [policy_pb2.PolicyRule(verbs=EDITOR_VERBS, resources=["clusters", "machines", "events"])],
    "viewer": [policy_pb2.PolicyRule(verbs=["get", "list", "watch"], resources=["*"])],
}


def _validate_rules(rules: Iterable[policy_pb2.PolicyRule], path: str) -> list[FieldViolation]:
    out = []
    for i, rule in enumerate(rules):
        if not rule.verbs:
            out.append(FieldViolation(f"{path}[{i}].verbs", "at least one verb"))
        for v in rule.verbs:
            if v not in VERBS:
                out.append(
                    FieldViolation(f"{path}[{i}].verbs", f"unknown verb {v!r}; one of {', '.join(sorted(VERBS))}")
                )
        if not rule.resources:
            out.append(FieldViolation(f"{path}[{i}].resources", "at least one resource, or '*'"))
        for r in rule.resources:
            if not _RESOURCE.match(r):
                out.append(FieldViolation(f"{path}[{i}].resources", f"{r!r} is not a resource name"))
    return out


def validate_role(role: policy_pb2.Role) -> list[FieldViolation]:
    out = validate_metadata(role.metadata, "role.metadata")
    if role.metadata.name in BUILTIN_ROLES:
        out.append(FieldViolation("role.metadata.name", f"{role.metadata.name!r} is a built-in role"))
    return out + _validate_rules(role.spec.rules, "role.spec.rules")


def validate_binding(binding: policy_pb2.RoleBinding) -> list[FieldViolation]:
    out = validate_metadata(binding.metadata, "role_binding.metadata")
    if not binding.spec.role:
        out.append(FieldViolation("role_binding.spec.role", "is required"))
    if not binding.spec.subjects:
        out.append(FieldViolation("role_binding.spec.subjects", "at least one subject"))
    for i, subject in enumerate(binding.spec.subjects):
        if subject.kind not in ("User", "Group"):
            out.append(FieldViolation(f"role_binding.spec.subjects[{i}].kind", "must be 'User' or 'Group'"))
        if not subject.name or not subject.name.isprintable() or len(subject.name) > 253:
            out.append(FieldViolation(f"role_binding.spec.subjects[{i}].name", "is required (at most 253 characters)"))
    return out


def _no_status(status: Any, path: str) -> list[FieldViolation]:
    return []


ROLES: Kind[policy_pb2.Role] = Kind("role", "roles", policy_pb2.Role, validate_role, _no_status)
BINDINGS: Kind[policy_pb2.RoleBinding] = Kind(
    "role_binding", "rolebindings", policy_pb2.RoleBinding, validate_binding, _no_status
)


def _matches(rule: policy_pb2.PolicyRule, attributes: Attributes) -> bool:
    return (
        ("*" in rule.verbs or attributes.verb in rule.verbs)
        and ("*" in rule.resources or attributes.resource in rule.resources)
        and (not rule.resource_names or attributes.name in rule.resource_names)
    )


class PolicyCentre:
    def __init__(self, context: Any) -> None:
        prefix = context.prefix
        self.roles = Registry(ROLES, context.store, prefix)
        self.bindings = Registry(BINDINGS, context.store, prefix)
        self._role_mirror: Mirror[policy_pb2.Role] = Mirror(context.store, self.roles.root, self.roles.decode)
        self._binding_mirror: Mirror[policy_pb2.RoleBinding] = Mirror(
            context.store, self.bindings.root, self.bindings.decode
        )
        # Bindings by the tenant they apply in, rebuilt when the mirror moves (see _bindings_in).
        self._index_source: dict[str, policy_pb2.RoleBinding] | None = None
        self._index_revision = -1
        self._by_tenant: dict[str, list[policy_pb2.RoleBinding]] = {}
        self._everywhere: list[policy_pb2.RoleBinding] = []

    async def start(self) -> None:
        await self._role_mirror.start()
        await self._binding_mirror.start()

    async def stop(self) -> None:
        await self._role_mirror.stop()
        await self._binding_mirror.stop()

    def services(self) -> list[tuple[str, Any]]:
        servicer = PolicyService(self)

        def add(server: grpc.aio.Server) -> None:
            policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)

        return [(policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name, add)]

    # -- decisions --------------------------------------------------------------------------

    def _rules(self, tenant: str, role: str) -> list[policy_pb2.PolicyRule]:
        if role in BUILTIN_ROLES:
            return BUILTIN_ROLES[role]
        stored = self._role_mirror.items.get(self.roles.key(tenant, role))
        return list(stored.spec.rules) if stored else []

    def _bindings_in(self, tenant: str) -> list[policy_pb2.RoleBinding]:
        """The bindings that may apply in `tenant`, in the mirror's order. The index is rebuilt
        when the mirror has moved (a new revision or a new copy), so a decision looks at its
        tenant's bindings only, not at every tenant's: the cost per call no longer grows with
        the number of tenants."""
        mirror = self._binding_mirror
        if self._index_source is not mirror.items or self._index_revision != mirror.revision:
            self._by_tenant, self._everywhere = _index(mirror.items.values())
            self._index_source, self._index_revision = mirror.items, mirror.revision
        return self._by_tenant.get(tenant, self._everywhere)

    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        identity = attributes.identity
        if PLATFORM_ADMINS in identity.groups:
            return Decision.ALLOW, f"group {PLATFORM_ADMINS} is admin of every tenant"
        subjects = {("User", identity.user), *(("Group", g) for g in identity.groups)}
        for binding in self._bindings_in(attributes.tenant):
            meta, spec = binding.metadata, binding.spec
            if not any((s.kind, s.name) in subjects for s in spec.subjects):
                continue
            if any(_matches(rule, attributes) for rule in self._rules(meta.tenant_id, spec.role)):
                return Decision.ALLOW, f'role "{spec.role}" via binding "{meta.name}" in tenant "{meta.tenant_id}"'
        return Decision.NO_OPINION, f"no role binding in tenant {attributes.tenant!r} allows it"


def _index(
    bindings: Iterable[policy_pb2.RoleBinding],
) -> tuple[dict[str, list[policy_pb2.RoleBinding]], list[policy_pb2.RoleBinding]]:
    """Per tenant, the bindings that apply in it (its own and the all-tenant ones), in the
    order given; and the all-tenant ones alone (for a tenant without bindings of its own)."""
    by_tenant: dict[str, list[policy_pb2.RoleBinding]] = {}
    everywhere: list[policy_pb2.RoleBinding] = []
    for binding in bindings:
        if binding.spec.all_tenants:
            everywhere.append(binding)
            for own in by_tenant.values():
                own.append(binding)
            by_tenant.setdefault(binding.metadata.tenant_id, list(everywhere))
        else:
            by_tenant.setdefault(binding.metadata.tenant_id, list(everywhere)).append(binding)
    return by_tenant, everywhere


def _page(page: Any, out: Any) -> None:
    out.items.extend(page.items)
    out.metadata.resource_version = str(page.revision)
    out.metadata.continue_token = page.continue_token


class PolicyService(policy_pb2_grpc.PolicyServiceServicer):
    """CRUD of roles and bindings; the interceptor chain has already authorized the call."""

    def __init__(self, centre: PolicyCentre) -> None:
        self.roles: ResourceAPI[policy_pb2.Role] = ResourceAPI(centre.roles, None)
        self.bindings: ResourceAPI[policy_pb2.RoleBinding] = ResourceAPI(centre.bindings, None)

    async def CreateRole(self, request: policy_pb2.CreateRoleRequest, context: Any) -> policy_pb2.Role:
        return await self.roles.create(request.role if request.HasField("role") else None)

    async def GetRole(self, request: policy_pb2.GetRoleRequest, context: Any) -> policy_pb2.Role:
        return await self.roles.get(request.name, request.tenant_id)

    async def ListRoles(self, request: policy_pb2.ListRolesRequest, context: Any) -> policy_pb2.RoleList:
        page = await self.roles.list(
            request.tenant_id, request.label_selector, request.page_size, request.continue_token
        )
        out = policy_pb2.RoleList()
        _page(page, out)
        return out

    async def UpdateRole(self, request: policy_pb2.UpdateRoleRequest, context: Any) -> policy_pb2.Role:
        return await self.roles.update(request.role, request.update_mask)

    async def DeleteRole(self, request: policy_pb2.DeleteRoleRequest, context: Any) -> policy_pb2.Role:
        return await self.roles.delete(request.name, request.tenant_id, request.resource_version)

    def _check_all_tenants(self, binding: policy_pb2.RoleBinding) -> None:
        if binding.spec.all_tenants and PLATFORM_ADMINS not in current_identity.get().groups:
            raise errors.permission_denied("only platform administrators create bindings with all_tenants")

    async def CreateRoleBinding(
        self, request: policy_pb2.CreateRoleBindingRequest, context: Any
    ) -> policy_pb2.RoleBinding:
        binding = request.role_binding if request.HasField("role_binding") else None
        if binding is not None:
            self._check_all_tenants(binding)
        return await self.bindings.create(binding)

    async def GetRoleBinding(self, request: policy_pb2.GetRoleBindingRequest, context: Any) -> policy_pb2.RoleBinding:
        return await self.bindings.get(request.name, request.tenant_id)

    async def ListRoleBindings(
        self, request: policy_pb2.ListRoleBindingsRequest, context: Any
    ) -> policy_pb2.RoleBindingList:
        page = await self.bindings.list(
            request.tenant_id, request.label_selector, request.page_size, request.continue_token
        )
        out = policy_pb2.RoleBindingList()
        _page(page, out)
        return out

    async def UpdateRoleBinding(
        self, request: policy_pb2.UpdateRoleBindingRequest, context: Any
    ) -> policy_pb2.RoleBinding:
        self._check_all_tenants(request.role_binding)
        return await self.bindings.update(request.role_binding, request.update_mask)

    async def DeleteRoleBinding(
        self, request: policy_pb2.DeleteRoleBindingRequest, context: Any
    ) -> policy_pb2.RoleBinding:
        return await self.bindings.delete(request.name, request.tenant_id, request.resource_version)
