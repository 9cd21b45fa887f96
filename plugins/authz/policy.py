"""The built-in policy centre: roles and role bindings per tenant, stored in etcd, managed
through PolicyService, enforced by this authorizer. Entry point `policy` of `tke.authz`.

Decisions:
- ALLOW when a binding in the call's tenant (or a binding with all_tenants) names the caller
  or one of its groups and its role has a rule matching the verb, the resource and, when the
  rule lists names, the object's name.
- NO_OPINION otherwise, with the reason, so that another authorizer may still allow; the union
  denies when nobody does.
- Members of tke:platform-admins are admins of every tenant (a built-in binding).
Built-in roles exist in every tenant without being stored: admin (every verb on everything
but update-status, listed rather than "*"), editor (every verb on clusters, machines and events
but get-admin-kubeconfig: a kubeconfig, not cluster-admin in the cluster, and update-status;
and get on quotas, the tenant's quotas and usage), viewer (get, list, watch on everything: no
kubeconfig). Status is the platform's to write: only
platform administrators (the controller is one) hold update-status, or "*", unless a platform
administrator writes a role that gives it.
Roles and bindings are mirrored in memory, so a decision never waits for etcd. Bindings are
indexed by the tenant they apply in, kept change by change (a write costs the same at 10 or
20,000 bindings), so a decision reads its tenant's bindings and the all-tenant ones only. A
decision depends only on the caller's user and groups, the call, the bindings that apply in
its tenant and their roles, so it is kept (at most DECISIONS_KEPT of them) per tenant until
one of those changes: a write in tenant T forgets T's decisions, a write to an all-tenant
binding or to a role one uses forgets every tenant's; a write takes effect for the next
decision exactly as without the cache, and one tenant's writes cost the others nothing.

It is a GrantSource (tke.internal.auth.authority): it says what it grants whom, so that the
platform can compare privileges. Writing a role or binding is admitted only when the caller
holds every grant the object gives, before and after the change (Kubernetes RBAC's escalation
prevention), checked on the exact state the write replaces:
- a binding gives its role's rules in its tenant, or in every tenant with all_tenants (which
  only platform administrators hold); a role that does not exist or has no rules yet gives
  anything there, since it may still get any rule; naming the group tke:platform-admins is the
  group's own power;
- a role gives its rules in its tenant, and in every tenant while an all-tenant binding uses it.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from tke.auth.v1 import policy_pb2, policy_pb2_grpc
from tke.internal.apiserver.api import ResourceAPI
from tke.internal.apiserver.registry import Kind, Registry
from tke.internal.apiserver.validation import validate_metadata
from tke.internal.auth.authority import ALL_TENANTS, PLATFORM_ADMIN_GRANT, Authority, Grant
from tke.internal.auth.authz import Attributes, Decision
from tke.internal.auth.identity import PLATFORM_ADMINS, Identity, current_identity
from tke.internal.rpc.errors import FieldViolation
from tke.internal.storage.mirror import Mirror

VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "update-status", "delete", "logout", "get-kubeconfig",
     "get-admin-kubeconfig", "*"}
)  # fmt: skip
# Status is the controller's record of what it built (conditions, phase, endpoints, control-plane
# members, cloud resources): written by the platform only, the controller and platform
# administrators (tke:platform-admins), as Kubernetes grants the status subresource to
# controllers. No built-in tenant role has it, nor the verb "*" that would include it, so a tenant
# admin also cannot write a role or binding that gives it (escalation prevention).
PLATFORM_VERBS = frozenset({"update-status", "*"})
TENANT_ADMIN_VERBS = sorted(VERBS - PLATFORM_VERBS)
EDITOR_VERBS = ["get", "list", "watch", "create", "update", "delete", "get-kubeconfig"]
_RESOURCE = re.compile(r"^(\*|[a-z][a-z0-9-]{0,62})$")

BUILTIN_ROLES: dict[str, list[policy_pb2.PolicyRule]] = {
    "admin": [policy_pb2.PolicyRule(verbs=TENANT_ADMIN_VERBS, resources=["*"])],
    "editor": [
        policy_pb2.PolicyRule(verbs=EDITOR_VERBS, resources=["clusters", "machines", "events"]),
        # What the tenant's quotas allow and what it uses (QuotaService), as Kubernetes' edit
        # role reads resourcequotas: who creates should see how much is left.
        policy_pb2.PolicyRule(verbs=["get"], resources=["quotas"]),
    ],
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
            if not _RESOURCE.fullmatch(r):
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


# Decisions kept between changes to roles and bindings; past it they are forgotten at once
# (names in calls are the caller's to choose: the cache must not grow with them).
DECISIONS_KEPT = 10_000

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


def _subjects(identity: Identity) -> set[tuple[str, str]]:
    return {("User", identity.user), *(("Group", g) for g in identity.groups)}


def _names_any(binding: policy_pb2.RoleBinding, subjects: set[tuple[str, str]]) -> bool:
    return any((s.kind, s.name) in subjects for s in binding.spec.subjects)


class PolicyCentre:
    def __init__(self, context: Any) -> None:
        prefix = context.prefix
        self._context = context
        self.roles = Registry(dataclasses.replace(ROLES, admit_write=self._admit_role), context.store, prefix)
        self.bindings = Registry(dataclasses.replace(BINDINGS, admit_write=self._admit_binding), context.store, prefix)
        # Roles and bindings count against their tenant's quotas (quotas.roles, quotas.rolebindings).
        quota_kind = getattr(context, "quota_kind", None)
        for registry in (self.roles, self.bindings):
            if quota_kind is not None:
                registry.usage = quota_kind(registry.kind.plural, registry.kind.name, registry.root)
        self._role_mirror: Mirror[policy_pb2.Role] = Mirror(
            context.store,
            self.roles.root,
            self.roles.decode,
            on_change=self._role_changed,
            on_reset=self._forget_all,
            follower=self.roles.usage,
        )
        self._binding_mirror: Mirror[policy_pb2.RoleBinding] = Mirror(
            context.store,
            self.bindings.root,
            self.bindings.decode,
            on_change=self._binding_changed,
            on_reset=self._reindex,
            follower=self.bindings.usage,
        )
        # Bindings by key: a tenant's own (by its tenant), and the all-tenant ones.
        self._own: dict[str, dict[str, policy_pb2.RoleBinding]] = {}
        self._everywhere: dict[str, policy_pb2.RoleBinding] = {}
        # Decisions by tenant, then (user, groups, verb, resource, name); _kept counts them all.
        self._decisions: dict[str, dict[tuple[str, tuple[str, ...], str, str, str], tuple[Decision, str]]] = {}
        self._kept = 0

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

    def _bindings_in(self, tenant: str) -> Iterator[policy_pb2.RoleBinding]:
        """The bindings that may apply in `tenant`: its own, then the all-tenant ones. The cost
        per call does not grow with the number of tenants."""
        return itertools.chain(self._own.get(tenant, {}).values(), self._everywhere.values())

    # -- the index and the kept decisions follow the mirrors change by change ------------------

    def _reindex(self) -> None:
        self._own.clear()
        self._everywhere.clear()
        for key, binding in self._binding_mirror.items.items():
            self._index(key, binding)
        self._forget_all()

    def _index(self, key: str, binding: policy_pb2.RoleBinding) -> None:
        if binding.spec.all_tenants:
            self._everywhere[key] = binding
        else:
            self._own.setdefault(binding.metadata.tenant_id, {})[key] = binding

    def _binding_changed(
        self, key: str, before: policy_pb2.RoleBinding | None, after: policy_pb2.RoleBinding | None
    ) -> None:
        for binding in (before, after):
            if binding is None:
                continue
            if binding.spec.all_tenants:
                self._forget_all()
            else:
                self._forget(binding.metadata.tenant_id)
        if before is not None:
            if before.spec.all_tenants:
                self._everywhere.pop(key, None)
            elif (own := self._own.get(before.metadata.tenant_id)) is not None:
                own.pop(key, None)
                if not own:
                    del self._own[before.metadata.tenant_id]
        if after is not None:
            self._index(key, after)

    def _role_changed(self, key: str, before: policy_pb2.Role | None, after: policy_pb2.Role | None) -> None:
        meta = (after or before or policy_pb2.Role()).metadata
        if any(b.spec.role == meta.name and b.metadata.tenant_id == meta.tenant_id for b in self._everywhere.values()):
            self._forget_all()
        else:
            self._forget(meta.tenant_id)

    def _forget(self, tenant: str) -> None:
        self._kept -= len(self._decisions.pop(tenant, ()))
        self._tell_streams(tenant)

    def _forget_all(self) -> None:
        self._clear_kept()
        self._tell_streams(None)

    def _clear_kept(self) -> None:
        self._decisions.clear()
        self._kept = 0

    def _tell_streams(self, tenant: str | None) -> None:
        """Whatever makes a kept decision stale may end an open stream's access too: have the
        streams authorized in `tenant` (None: everywhere) checked again now."""
        changed = getattr(self._context, "access_changed", None)
        if changed is not None:
            changed(tenant=tenant)

    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        identity = attributes.identity
        if PLATFORM_ADMINS in identity.groups:
            return Decision.ALLOW, f"group {PLATFORM_ADMINS} is admin of every tenant"
        if self._kept >= DECISIONS_KEPT:
            self._clear_kept()  # (nothing changed: no stream needs checking)
        kept = self._decisions.setdefault(attributes.tenant, {})
        key = (identity.user, identity.groups, attributes.verb, attributes.resource, attributes.name)
        decided = kept.get(key)
        if decided is None:
            decided = kept[key] = self._decide(attributes)
            self._kept += 1
        return decided

    def _decide(self, attributes: Attributes) -> tuple[Decision, str]:
        subjects = _subjects(attributes.identity)
        for binding in self._bindings_in(attributes.tenant):
            meta, spec = binding.metadata, binding.spec
            if not _names_any(binding, subjects):
                continue
            if any(_matches(rule, attributes) for rule in self._rules(meta.tenant_id, spec.role)):
                return Decision.ALLOW, f'role "{spec.role}" via binding "{meta.name}" in tenant "{meta.tenant_id}"'
        return Decision.NO_OPINION, f"no role binding in tenant {attributes.tenant!r} allows it"

    # -- grants -----------------------------------------------------------------------------

    def _binding_grants(self, binding: policy_pb2.RoleBinding) -> list[Grant]:
        """What a binding grants its subjects now."""
        meta, spec = binding.metadata, binding.spec
        scope = ALL_TENANTS if spec.all_tenants else meta.tenant_id
        source = f'role "{spec.role}" of binding "{meta.name}" in tenant "{meta.tenant_id}"'
        return [
            Grant(scope, tuple(r.verbs), tuple(r.resources), tuple(r.resource_names), source)
            for r in self._rules(meta.tenant_id, spec.role)
        ]

    def grants_of(self, identity: Identity, tenant: str | None = None) -> list[Grant]:
        subjects = _subjects(identity)
        bindings = self._binding_mirror.items.values() if tenant is None else self._bindings_in(tenant)
        return [g for b in bindings if _names_any(b, subjects) for g in self._binding_grants(b)]

    # -- escalation prevention --------------------------------------------------------------

    @property
    def authority(self) -> Authority:
        authority: Authority | None = self._context.authority
        if authority is None:
            raise RuntimeError("the policy centre must be built by tke.internal.auth.chain.build")
        return authority

    def _binding_gives(self, binding: policy_pb2.RoleBinding) -> list[Grant]:
        """What writing `binding` can give, now or later (see the module's docstring)."""
        meta, spec = binding.metadata, binding.spec
        grants = self._binding_grants(binding)
        if not grants:
            scope = ALL_TENANTS if spec.all_tenants else meta.tenant_id
            grants = [
                Grant(
                    scope,
                    ("*",),
                    ("*",),
                    (),
                    f'binding "{meta.name}" in tenant "{meta.tenant_id}" of role "{spec.role}", '
                    "which may still be given any rule",
                )
            ]
        if any(s.kind == "Group" and s.name == PLATFORM_ADMINS for s in spec.subjects):
            naming = f'binding "{meta.name}" naming group {PLATFORM_ADMINS}'
            grants.append(dataclasses.replace(PLATFORM_ADMIN_GRANT, source=naming))
        return grants

    def _role_gives(self, role: policy_pb2.Role) -> list[Grant]:
        meta = role.metadata
        scopes = [meta.tenant_id]
        if any(b.spec.role == meta.name and b.metadata.tenant_id == meta.tenant_id for b in self._everywhere.values()):
            scopes.append(ALL_TENANTS)
        source = f'role "{meta.name}" in tenant "{meta.tenant_id}"'
        return [
            Grant(scope, tuple(r.verbs), tuple(r.resources), tuple(r.resource_names), source)
            for scope in scopes
            for r in role.spec.rules
        ]

    async def _admit(self, kind: str, before: Any, after: Any, gives: Callable[[Any], list[Grant]]) -> None:
        """The caller must hold what the object gives before and after the write."""
        caller = current_identity.get()
        doing = "create" if before is None else "delete" if after is None else "update"
        for obj in (before, after):
            if obj is not None:
                meta = obj.metadata
                what = f'{doing} {kind} "{meta.name}" in tenant "{meta.tenant_id}"'
                await self.authority.ensure_holds(caller, gives(obj), what)

    async def _admit_binding(self, before: policy_pb2.RoleBinding | None, after: policy_pb2.RoleBinding | None) -> None:
        await self._admit("role binding", before, after, self._binding_gives)

    async def _admit_role(self, before: policy_pb2.Role | None, after: policy_pb2.Role | None) -> None:
        await self._admit("role", before, after, self._role_gives)


def _page(page: Any, out: Any) -> None:
    out.items.extend(page.items)
    out.metadata.resource_version = str(page.revision)
    out.metadata.continue_token = page.continue_token


class PolicyService(policy_pb2_grpc.PolicyServiceServicer):
    """CRUD of roles and bindings; the interceptor chain has already authorized the call."""

    def __init__(self, centre: PolicyCentre) -> None:
        self.centre = centre
        self.roles: ResourceAPI[policy_pb2.Role] = ResourceAPI(centre.roles, None)
        self.bindings: ResourceAPI[policy_pb2.RoleBinding] = ResourceAPI(centre.bindings, None)

    async def _role_written(self, role: policy_pb2.Role) -> policy_pb2.Role:
        """Once this apiserver decides with it: a caller's next call here sees its own write."""
        await self.centre._role_mirror.wait_for(int(role.metadata.resource_version))
        return role

    async def _binding_written(self, binding: policy_pb2.RoleBinding) -> policy_pb2.RoleBinding:
        await self.centre._binding_mirror.wait_for(int(binding.metadata.resource_version))
        return binding

    async def CreateRole(self, request: policy_pb2.CreateRoleRequest, context: Any) -> policy_pb2.Role:
        return await self._role_written(await self.roles.create(request.role if request.HasField("role") else None))

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
        return await self._role_written(await self.roles.update(request.role, request.update_mask))

    async def DeleteRole(self, request: policy_pb2.DeleteRoleRequest, context: Any) -> policy_pb2.Role:
        return await self._role_written(
            await self.roles.delete(request.name, request.tenant_id, request.resource_version)
        )

    async def CreateRoleBinding(
        self, request: policy_pb2.CreateRoleBindingRequest, context: Any
    ) -> policy_pb2.RoleBinding:
        binding = request.role_binding if request.HasField("role_binding") else None
        return await self._binding_written(await self.bindings.create(binding))

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
        return await self._binding_written(await self.bindings.update(request.role_binding, request.update_mask))

    async def DeleteRoleBinding(
        self, request: policy_pb2.DeleteRoleBindingRequest, context: Any
    ) -> policy_pb2.RoleBinding:
        return await self._binding_written(
            await self.bindings.delete(request.name, request.tenant_id, request.resource_version)
        )
