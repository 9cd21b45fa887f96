"""Provider checks at the apiserver: a Cluster's or Machine's spec is also validated by the
provider its spec.type names, so a spec the provider cannot work with is refused with
INVALID_ARGUMENT (field by field) before it is stored, on create and on update.

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
from tke.internal.meta.resource import Resource
from tke.internal.plugin import loader
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


def with_provider_validation(
    kind: Kind[R], group: str, configured: Mapping[str, loader.ProviderConfig] | None = None
) -> Kind[R]:
    """`kind` whose validation also asks the provider (with its `configured` options), once the
    apiserver's own checks pass."""
    check = ProviderValidation(group, configured=configured)

    def validate(obj: R) -> list[FieldViolation]:
        return kind.validate(obj) or check(obj)

    return dataclasses.replace(kind, validate=validate)
