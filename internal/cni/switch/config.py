"""cni-switch's network configuration: the networks it may delegate to, the default, where its
state lives and how to reach tke-ipamd for workload bindings.

    {"cniVersion": "1.0.0", "name": "tke", "type": "cni-switch",
     "defaultNetwork": "bridge",
     "networks": {"bridge": {<inline .conf or .conflist>}, "fixed": "fixed.conflist"},
     "confDir": "/etc/cni/tke.d", "stateDir": "/var/lib/cni/tke-switch",
     "networkArg": "TKE_NETWORK",
     "ipamd": {"address": "/run/tke/ipamd.sock", "timeout": 2.0}}

A network given as a string is a file in `confDir` (or an absolute path); a name without a
suffix finds NAME.conflist, NAME.conf or NAME.json. Only the networks a verb needs are read.
Every mistake is a CNI error with code 7 that names the key.
"""

from __future__ import annotations

import os

from tke.internal.cni import jsonio as json
from tke.internal.cni.endpoint import IpamdEndpoint, path_option
from tke.internal.cni.errors import INVALID_NETWORK_CONFIG, CNIError
from tke.internal.cni.record import Record
from tke.internal.cni.version import DELEGATE_CAPABLE, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Not the runtime's /etc/cni/net.d: a runtime loads every network there as one of its own.
DEFAULT_CONF_DIR = "/etc/cni/tke.d"
DEFAULT_STATE_DIR = "/var/lib/cni/tke-switch"
DEFAULT_NETWORK_ARG = "TKE_NETWORK"
SUFFIXES = (".conflist", ".conf", ".json")
NAME_PUNCTUATION = frozenset("_.-")


def valid_name(name: str) -> bool:
    """A CNI network name: alphanumeric first, then alphanumerics, '_', '.' or '-'."""
    return (
        bool(name)
        and name[0].isascii()
        and name[0].isalnum()
        and all((c.isascii() and c.isalnum()) or c in NAME_PUNCTUATION for c in name)
    )


def invalid(msg: str, details: str = "") -> CNIError:
    return CNIError(INVALID_NETWORK_CONFIG, msg, details)


class Network(Record):
    """One delegate network, normalized to a plugin list. `key` is its name in cni-switch's
    configuration (what CNI_ARGS and bindings name); `name` is the CNI network name its plugins
    see (host-local keeps its leases under it)."""

    key: str
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    disable_check: bool = False
    disable_gc: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "name": self.name, "cniVersion": self.cni_version}
        out["plugins"] = list(self.plugins)
        if self.disable_check:
            out["disableCheck"] = True
        if self.disable_gc:
            out["disableGC"] = True
        return out

    @classmethod
    def from_json(cls, key: str, data: Any, where: str) -> Network:
        """An inline .conf (one plugin) or .conflist (a `plugins` list)."""
        if not isinstance(data, dict):
            raise invalid(f"{where}: a network must be a JSON object")
        name = data.get("name", key)
        if not isinstance(name, str) or not valid_name(name):
            raise invalid(f"{where}.name: invalid network name {name!r}")
        version = _conflist_version(data, where)
        if "plugins" in data:
            plugins = data["plugins"]
            if not isinstance(plugins, list) or not plugins:
                raise invalid(f"{where}.plugins: expected a non-empty list")
        else:
            plugins = [{k: v for k, v in data.items() if k not in ("name", "cniVersion", "cniVersions")}]
        for i, plugin in enumerate(plugins):
            if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str) or not plugin["type"]:
                raise invalid(f"{where}.plugins[{i}]: every plugin needs a type")
            if plugin["type"] == "cni-switch":
                raise invalid(f"{where}.plugins[{i}]: cni-switch cannot delegate to itself")
        for flag in ("disableCheck", "disableGC"):
            # "false" in quotes would have been true.
            if not isinstance(data.get(flag, False), bool):
                raise invalid(f"{where}.{flag}: expected true or false")
        return cls(
            key=key,
            name=name,
            cni_version=version,
            plugins=tuple(plugins),
            disable_check=data.get("disableCheck", False),
            disable_gc=data.get("disableGC", False),
        )


def _conflist_version(data: dict[str, Any], where: str) -> str:
    """The network's own cniVersion ('' = the caller's); with 1.1's `cniVersions`, the newest
    one we can speak."""
    versions = data.get("cniVersions")
    if isinstance(versions, list):
        usable = [v for v in versions if isinstance(v, str) and v in DELEGATE_CAPABLE]
        if usable:
            return max(usable, key=parse)
    version = data.get("cniVersion", "")
    if not isinstance(version, str):
        raise invalid(f"{where}.cniVersion: expected a string")
    if version:
        try:
            parse(version)
        except ValueError:
            raise invalid(f"{where}.cniVersion: {version!r} is not a version") from None
    return version


class SwitchConfig(Record):
    name: str
    default_network: str
    networks: dict[str, Any]
    conf_dir: str = DEFAULT_CONF_DIR
    state_dir: str = DEFAULT_STATE_DIR
    network_arg: str = DEFAULT_NETWORK_ARG
    ipamd: IpamdEndpoint | None = None
    args: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SwitchConfig:
        name = data.get("name")
        if not isinstance(name, str) or not valid_name(name):
            raise invalid(f"name: invalid network name {name!r}")
        networks = data.get("networks")
        if not isinstance(networks, dict) or not networks:
            raise invalid("networks: expected an object naming at least one network")
        for key, value in networks.items():
            if not valid_name(key):
                raise invalid(f"networks: invalid network name {key!r}")
            if not isinstance(value, dict | str) or not value:
                raise invalid(f"networks.{key}: expected an inline configuration or a file name")
        default = data.get("defaultNetwork", next(iter(networks)) if len(networks) == 1 else None)
        if not isinstance(default, str) or default not in networks:
            raise invalid(f"defaultNetwork: {default!r} is not one of networks {sorted(networks)}")
        strings = {}
        for key, fallback in (
            ("confDir", DEFAULT_CONF_DIR),
            ("stateDir", DEFAULT_STATE_DIR),
            ("networkArg", DEFAULT_NETWORK_ARG),
        ):
            value = data.get(key, fallback)
            if not isinstance(value, str) or not value:
                raise invalid(f"{key}: expected a non-empty string")
            strings[key] = path_option(value, key) if key.endswith("Dir") else value
        ipamd = data.get("ipamd")
        args = data.get("args")
        if args is not None and not isinstance(args, dict):
            # It was dropped without a word: no delegate got the args the operator wrote.
            raise invalid("args: expected an object (passed to every delegate plugin without args of its own)")
        return cls(
            name=name,
            default_network=default,
            networks=networks,
            conf_dir=strings["confDir"],
            state_dir=strings["stateDir"],
            network_arg=strings["networkArg"],
            ipamd=IpamdEndpoint.from_json(ipamd, "ipamd") if ipamd is not None else None,
            args=args,
        )

    def network(self, key: str) -> Network:
        """The network `key`, reading its file when it is given by name."""
        if key not in self.networks:
            raise invalid(f"unknown network {key!r}", f"cni-switch {self.name} knows {sorted(self.networks)}")
        value = self.networks[key]
        if isinstance(value, dict):
            return Network.from_json(key, value, f"networks.{key}")
        path = self._find_file(value)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except OSError as err:
            raise invalid(f"networks.{key}: cannot read {path}", err.strerror or str(err)) from None
        except ValueError as err:
            raise invalid(f"networks.{key}: {path} is not JSON", str(err)) from None
        return Network.from_json(key, data, path)

    def _find_file(self, ref: str) -> str:
        base = ref if os.path.isabs(ref) else os.path.join(self.conf_dir, ref)
        if ref.endswith(SUFFIXES):
            return base
        for suffix in SUFFIXES:
            if os.path.exists(base + suffix):
                return base + suffix
        return base + SUFFIXES[0]
