"""Provider checks at the apiserver: a Cluster's or Machine's spec is also validated by the
provider its spec.type names, so a spec the provider cannot work with is refused with
INVALID_ARGUMENT (field by field) before it is stored, on create and on update. An update is also
shown to the provider with the stored object (`validate_update(before, after)`, when it has
one): the fields that say where what it built lives (an AWS account and region) cannot move
once it started building, or its teardown would look elsewhere and leave it running.

Providers are found as the controller finds them (entry points of `tke.cluster_providers` or
`tke.machine_providers`). A type configured in the apiserver's `[cluster_providers.TYPE]` or
`[machine_providers.TYPE]` table is constructed with those options when the apiserver starts
(a plugin that cannot start stops the apiserver, as it stops the controller): that is how the
operator's limits (the aws providers' allowed instance types, say) refuse a spec before it is
stored. Other types are constructed with their default options when first needed. A type no
provider installed here serves is not refused: the controller may run elsewhere with more
plugins (and marks such objects Failed with reason UnknownProvider).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from tke.internal.apiserver.registry import Kind
from tke.internal.auth.authority import current_authority
from tke.internal.auth.authz import Attributes, Decision
from tke.internal.auth.identity import current_identity
from tke.internal.meta.resource import Resource
from tke.internal.plugin import loader
from tke.internal.provider.addresses import AddressPolicy, url_host
from tke.internal.rpc import errors
from tke.internal.rpc.errors import FieldViolation

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Resource)


class ProviderValidation:
    def __init__(
        self,
        group: str,
        load: Callable[[str, str], Any] | None = None,
        configured: Mapping[str, loader.ProviderConfig] | None = None,
    ) -> None:
        self.group = group
        self._load = load or (lambda group, name: loader.load(group, name, {}))
        # Found once per type (None: not installed here); providers are cheap and stateless.
        # Configured ones now, so that options the plugin refuses stop the apiserver.
        self._providers: dict[str, Any] = {
            type_name: loader.load(group, cfg.plugin or type_name, cfg.options)
            for type_name, cfg in (configured or {}).items()
        }

    def _provider(self, type_name: str) -> Any:
        if type_name not in self._providers:
            provider = None
            try:
                provider = self._load(self.group, type_name)
            except loader.PluginError as err:
                log.info("no %s provider %r to validate with: %s", self.group, type_name, err)
            self._providers[type_name] = provider
        return self._providers[type_name]

    def __call__(self, obj: Any) -> list[FieldViolation]:
        provider = self._provider(obj.spec.type)
        if provider is None or not hasattr(provider, "validate"):
            return []
        return list(provider.validate(obj))

    def update(self, before: Any, after: Any) -> list[FieldViolation]:
        """The provider's refusals of changing `before` into `after` (fields that say where what it
        built lives, once it started building): `validate_update`, when the provider has one."""
        provider = self._provider(after.spec.type)
        if provider is None or not hasattr(provider, "validate_update"):
            return []
        return list(provider.validate_update(before, after))


def with_provider_validation(
    kind: Kind[R], group: str, configured: Mapping[str, loader.ProviderConfig] | None = None
) -> Kind[R]:
    """`kind` whose validation also asks the provider (with its `configured` options), once the
    apiserver's own checks pass."""
    check = ProviderValidation(group, configured=configured)

    def validate(obj: R) -> list[FieldViolation]:
        return kind.validate(obj) or check(obj)

    inner = kind.validate_update

    def validate_update(before: R, after: R) -> list[FieldViolation]:
        return (inner(before, after) if inner is not None else []) or check.update(before, after)

    return dataclasses.replace(kind, validate=validate, validate_update=validate_update)


def cluster_addresses(cluster: Any) -> list[tuple[str, str]]:
    """(field, host as written) of every address in a Cluster's spec that the controller dials:
    the control-plane machines (SSH), a managed VIP and an operator's endpoint (the API server's
    /readyz), an imported cluster's API server."""
    spec = cluster.spec
    out = [(f"cluster.spec.machines[{i}].ip", m.ip) for i, m in enumerate(spec.machines) if m.ip]
    if spec.HasField("control_plane_vip") and spec.control_plane_vip.address:
        out.append(("cluster.spec.control_plane_vip.address", spec.control_plane_vip.address))
    if spec.HasField("control_plane_endpoint") and spec.control_plane_endpoint.host:
        out.append(("cluster.spec.control_plane_endpoint.host", spec.control_plane_endpoint.host))
    if spec.api_server_url:
        host, _ = url_host(spec.api_server_url)
        if host:
            out.append(("cluster.spec.api_server_url", host))
    return out


def machine_addresses(machine: Any) -> list[tuple[str, str]]:
    return [("machine.spec.ip", machine.spec.ip)] if machine.spec.ip else []


def with_address_policy(
    kind: Kind[R], policy: AddressPolicy, addresses: Callable[[R], list[tuple[str, str]]]
) -> Kind[R]:
    """`kind` whose writes may not point the controller at an address `policy` refuses
    (INVALID_ARGUMENT naming each field). Only an address a write brings in is refused: an
    object stored before the rule, or before the operator narrowed it, can still be updated
    (its finalizers removed) and deleted; tke-controller refuses to dial it."""
    inner = kind.admit_write

    async def admit(before: R | None, after: R | None) -> None:
        if after is not None:
            old = set(addresses(before)) if before is not None else set()
            violations = [
                FieldViolation(path, err)
                for path, host in addresses(after)
                if (path, host) not in old and (err := policy.host_refusal(host))
            ]
            if violations:
                raise errors.invalid(violations)
        if inner is not None:
            await inner(before, after)

    return dataclasses.replace(kind, admit_write=admit)


# Finalizers under the platform's prefix (the controller's tke.cloud/cluster-provider and
# tke.cloud/machine-provider) hold an object until the controller has torn down what it built for
# it: instances, VPCs and load balancers in the platform's AWS account, a hosted control plane's
# namespace and volumes in the shared meta cluster. They are the platform's, as status is.
PLATFORM_FINALIZER_PREFIX = "tke.cloud/"
PLATFORM_VERB = "update-status"


def with_platform_finalizers(kind: Kind[R]) -> Kind[R]:
    """`kind` whose writes may add or remove a finalizer of the platform's (PLATFORM_FINALIZER_PREFIX)
    only for a caller holding `update-status` on the object (the controller, platform
    administrators): PERMISSION_DENIED otherwise. A tenant that removed the controller's finalizer
    deleted its object at once, past the teardown, and left what the platform built for it running,
    billed to the operator and outside every tenant quota. Checked on the exact state the write
    replaces (admit_write runs inside the registry's compare-and-swap)."""
    inner = kind.admit_write

    async def admit(before: R | None, after: R | None) -> None:
        if after is not None:
            old = set(before.metadata.finalizers) if before is not None else set()
            changed = sorted(f for f in old ^ set(after.metadata.finalizers) if f.startswith(PLATFORM_FINALIZER_PREFIX))
            if changed:
                await _ensure_platform(kind.plural, after, changed)
        if inner is not None:
            await inner(before, after)

    return dataclasses.replace(kind, admit_write=admit)


async def _ensure_platform(resource: str, obj: Any, changed: list[str]) -> None:
    identity = current_identity.get()
    authority = current_authority.get()
    meta = obj.metadata
    if authority is None:  # no auth chain: every caller is the anonymous platform administrator
        allowed, reason = identity.is_platform_admin, "platform administrators only"
    else:
        decision, reason = await authority.authorize(
            Attributes(identity, PLATFORM_VERB, resource, meta.name, meta.tenant_id)
        )
        allowed = decision is Decision.ALLOW
    if not allowed:
        raise errors.permission_denied(
            f"user {identity.user!r} may not add or remove the platform's finalizers {', '.join(changed)} of "
            f"{resource}/{meta.name} in tenant {meta.tenant_id!r}: they hold the object until the controller has "
            f"torn down what it built for it ({PLATFORM_VERB} {resource} is needed: {reason})"
        )
