"""Authority: whether a caller may act on another principal or write a grant, and where a
caller has rights at all. The rules every auth admin call and every tenant check share.

- Privileges are Grants: verbs on resources (optionally only some names) in one tenant, or in
  every tenant ("*"). An authorizer that can list what it grants someone (the policy centre) is
  a GrantSource; membership of tke:platform-admins is the grant of everything everywhere.
- No escalation (Kubernetes RBAC's rule): a caller may act on a user, or create, change or
  delete a role or binding, only if it already holds every grant the user holds, or the object
  grants before and after the change. Whether the caller holds a tenant's grant is asked of the
  configured authorizers themselves, one (verb, resource, name) at a time, with "*" asked
  literally, so that only a wildcard holds a wildcard. A grant in every tenant is the
  platform's own: only members of tke:platform-admins hold it.
- Behind an authorizer that cannot list its grants (an external one), a group may carry
  privileges nobody here can see: there the caller must also be in every group of the target.
- Reach: a caller has rights in its own tenant, in a tenant where it holds a grant, and in
  every tenant with an all-tenant grant. A call naming an object of a tenant the caller cannot
  reach is answered NOT_FOUND whether or not the object exists, so that tenants learn nothing
  of each other; inside a reachable tenant a refusal is PERMISSION_DENIED.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import grpc
from google.rpc import error_details_pb2

from tke.internal.auth import authz
from tke.internal.auth.authz import Attributes, Authorizer, Decision
from tke.internal.auth.identity import PLATFORM_ADMINS, Identity, current_identity
from tke.internal.rpc import errors

ALL_TENANTS = "*"
# Verbs on one existing object: refused in an unreachable tenant as NOT_FOUND.
NAMED_VERBS = frozenset({"get", "update", "update-status", "delete", "get-kubeconfig", "get-admin-kubeconfig"})


@dataclass(frozen=True)
class Grant:
    """What a role grants in a tenant ("*": in every tenant); `names` empty means any name."""

    tenant: str
    verbs: tuple[str, ...]
    resources: tuple[str, ...]
    names: tuple[str, ...] = ()
    source: str = ""  # where it comes from, for messages: 'role "admin" of binding "x" in tenant "a"'

    def requests(self) -> Iterator[tuple[str, str, str]]:
        """Every (verb, resource, name) the grant allows; "*" stays "*"."""
        for verb in self.verbs:
            for resource in self.resources:
                for name in self.names or ("",):
                    yield verb, resource, name

    def __str__(self) -> str:
        names = f" named {', '.join(self.names)}" if self.names else ""
        where = "every tenant" if self.tenant == ALL_TENANTS else f"tenant {self.tenant!r}"
        return f"{','.join(self.verbs)} on {','.join(self.resources)}{names} in {where} ({self.source})"


PLATFORM_ADMIN_GRANT = Grant(ALL_TENANTS, ("*",), ("*",), (), f"group {PLATFORM_ADMINS}")


@runtime_checkable
class GrantSource(Protocol):
    """An authorizer that can say what it grants an identity."""

    def grants_of(self, identity: Identity, tenant: str | None = None) -> list[Grant]:
        """The grants `identity` holds that apply in `tenant` (its own and all-tenant grants), or
        everywhere when `tenant` is None."""
        ...


class Authority:
    """The rules above over the configured authorizers (without the self-service rule: acting
    on one's own account needs no privilege, but it grants none either)."""

    def __init__(self, authorizers: Sequence[Authorizer]) -> None:
        self._authorizer = authz.Union(authorizers)
        self._sources = [a for a in authorizers if isinstance(a, GrantSource)]
        self._opaque = len(self._sources) < len(authorizers)

    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        return await self._authorizer.authorize(attributes)

    def grants_of(self, identity: Identity, tenant: str | None = None) -> list[Grant]:
        if identity.is_platform_admin:
            return [PLATFORM_ADMIN_GRANT]
        return [g for source in self._sources for g in source.grants_of(identity, tenant)]

    def reaches(self, identity: Identity, tenant: str) -> bool:
        """Whether `identity` has rights in `tenant` ("*": in every tenant)."""
        if identity.is_platform_admin or (tenant == identity.tenant_id and tenant != ALL_TENANTS):
            return True
        return any(g.tenant in (tenant, ALL_TENANTS) for g in self.grants_of(identity, tenant))

    def refusal(self, attributes: Attributes, reason: str) -> errors.ApiError:
        """The error for a call the authorizers did not allow: NOT_FOUND for an object of a
        tenant the caller cannot reach, PERMISSION_DENIED otherwise."""
        identity, tenant, name = attributes.identity, attributes.tenant, attributes.name
        foreign = tenant not in (identity.tenant_id, ALL_TENANTS)
        if name and attributes.verb in NAMED_VERBS and foreign and not self.reaches(identity, tenant):
            return errors.not_found(attributes.resource.removesuffix("s"), name, tenant)
        target = f"{attributes.resource}/{name}" if name else attributes.resource
        return errors.permission_denied(
            f"user {identity.user!r} may not {attributes.verb} {target} in tenant {tenant!r}: {reason}"
        )

    async def holds(self, caller: Identity, grant: Grant) -> bool:
        if caller.is_platform_admin:
            return True
        if grant.tenant == ALL_TENANTS:
            return False  # every tenant at once is the platform's: see the module's docstring
        for verb, resource, name in grant.requests():
            decision, _ = await self._authorizer.authorize(Attributes(caller, verb, resource, name, grant.tenant))
            if decision is not Decision.ALLOW:
                return False
        return True

    async def ensure_holds(self, caller: Identity, grants: Iterable[Grant], doing: str) -> None:
        """PERMISSION_DENIED naming the first grant `caller` does not hold."""
        for grant in grants:
            if not await self.holds(caller, grant):
                raise escalation(caller, doing, f"it grants {grant}, which {caller.user!r} does not hold", grant)

    async def ensure_may_act_on(self, caller: Identity, target: Identity, doing: str) -> None:
        """The caller may act on `target` (change its password, make it a key, disable, delete or
        create it): it reaches the target's tenant and holds every privilege the target holds."""
        if caller.is_platform_admin:
            return
        if not self.reaches(caller, target.tenant_id):
            raise escalation(caller, doing, f"{target.user!r} belongs to tenant {target.tenant_id!r}")
        if self._opaque and (missing := sorted(set(target.groups) - set(caller.groups))):
            raise escalation(caller, doing, f"{target.user!r} is in groups {missing} that {caller.user!r} is not in")
        for grant in self.grants_of(target):
            if not await self.holds(caller, grant):
                raise escalation(caller, doing, f"{target.user!r} holds {grant}, which {caller.user!r} does not", grant)


def escalation(caller: Identity, doing: str, why: str, grant: Grant | None = None) -> errors.ApiError:
    """PERMISSION_DENIED for an act that would give the caller what it does not hold, with an
    ErrorInfo (reason PRIVILEGE_ESCALATION) naming the grant."""
    metadata = {"user": caller.user}
    if grant is not None:
        metadata |= {
            "tenant": grant.tenant,
            "verbs": ",".join(grant.verbs),
            "resources": ",".join(grant.resources),
            "names": ",".join(grant.names),
            "source": grant.source,
        }
    info = error_details_pb2.ErrorInfo(reason="PRIVILEGE_ESCALATION", domain=errors.DOMAIN, metadata=metadata)
    return errors.ApiError(grpc.StatusCode.PERMISSION_DENIED, f"user {caller.user!r} may not {doing}: {why}", [info])


current_authority: contextvars.ContextVar[Authority | None] = contextvars.ContextVar("authority", default=None)


def caller_reaches(tenant: str) -> bool:
    """Whether the current caller has rights in `tenant`. Without an auth chain (authentication
    off) every caller is the anonymous platform administrator."""
    identity = current_identity.get()
    authority = current_authority.get()
    if authority is None:
        return identity.is_platform_admin or tenant == identity.tenant_id
    return authority.reaches(identity, tenant)
