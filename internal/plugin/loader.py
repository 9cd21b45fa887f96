"""Find a plugin class by name: an entry point of a group (for example "etcd" in
`tke.ip_storage`), or "module:Attribute" for a plugin that is not installed as a package.

The loader only finds and constructs; what a plugin must provide is its seam's Protocol.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any


class PluginError(Exception):
    """The plugin cannot be found or constructed; the message says which and why."""


@dataclass(frozen=True)
class ProviderConfig:
    """A configuration table naming a plugin and its options ([cluster_providers.aws], ...)."""

    # Entry point name in the provider group, or "module:Class"; empty means the table's key.
    plugin: str = ""
    # Keyword arguments of the provider's constructor.
    options: dict[str, Any] = field(default_factory=dict)


def available(group: str) -> list[str]:
    """Names of the entry points installed in `group`."""
    return sorted({ep.name for ep in entry_points(group=group)})


def find(group: str, name: str) -> Any:
    """The object named `name`: "module:Attribute" or an entry point of `group`."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise PluginError(f"plugin {name!r}: cannot import {module_name}: {err}") from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise PluginError(f"plugin {name!r}: {module_name} has no {attr}") from None
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        known = ", ".join(available(group)) or "none installed"
        raise PluginError(f"no {group} plugin named {name!r} (known: {known})")
    try:
        return matches[0].load()
    except Exception as err:
        raise PluginError(f"plugin {name!r} of {group} failed to load: {err}") from None


def load(group: str, name: str, options: dict[str, Any] | None = None) -> Any:
    """Find the plugin and construct it with `options` as keyword arguments."""
    factory = find(group, name)
    try:
        return factory(**(options or {}))
    except Exception as err:
        raise PluginError(f"plugin {name!r} of {group}: cannot start it with its options: {err}") from None
