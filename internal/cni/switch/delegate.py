"""Running one delegate network's plugin chain the way libcni runs a .conflist: ADD in order
with each plugin's result as the next one's prevResult, DEL in reverse, CHECK in order with the
final result, GC and STATUS to the plugins that speak 1.1.0 (and, for 1.0.0 main plugins, to
their IPAM plugin directly, which is how GC reaches tke-ipamd through Debian's bridge when
cni-switch does not run the network's tke-ipamc itself: see tke.internal.cni.switch.inline).

Each plugin gets the newest specification version that it supports, that we can convert and
that is no newer than both the runtime's and the network's own `cniVersion`; what a plugin
supports is asked once (VERSION) and cached by executable identity in the state directory.
"""

from __future__ import annotations

import os

from tke.internal.cni import atomicfile
from tke.internal.cni import jsonio as json
from tke.internal.cni.errors import DELEGATE_FAILED, INCOMPATIBLE_VERSION, NOT_AVAILABLE, CNIError
from tke.internal.cni.invoke import supported_versions
from tke.internal.cni.record import Record
from tke.internal.cni.skel import warn
from tke.internal.cni.switch.config import Network
from tke.internal.cni.version import at_least, convert_result, for_delegate, parse, result_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from tke.internal.cni.invoke import Exec

GC_VERSION = "1.1.0"


class PluginVersions:
    """supportedVersions per executable, cached in a JSON file keyed by the executable's inode,
    size and mtime, so a replaced binary is asked again."""

    def __init__(self, runner: Exec, cache_file: str | None) -> None:
        self.runner = runner
        self.cache_file = cache_file
        self._cache: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._cache is None:
            raw = atomicfile.read(self.cache_file) if self.cache_file else None
            try:
                data = json.loads(raw) if raw else {}
            except ValueError:
                data = {}
            self._cache = data if isinstance(data, dict) else {}
        return self._cache

    def get(self, executable: str, env: Mapping[str, str]) -> list[str]:
        try:
            st = os.stat(executable)
        except OSError:
            return supported_versions(self.runner, executable, env)  # nothing to key a cache on
        key = [st.st_ino, st.st_size, st.st_mtime_ns]
        cache = self._load()
        entry = cache.get(executable)
        if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("versions"), list):
            return [str(v) for v in entry["versions"]]
        versions = supported_versions(self.runner, executable, env)
        cache[executable] = {"key": key, "versions": versions}
        if self.cache_file:
            try:
                os.makedirs(os.path.dirname(self.cache_file), mode=0o700, exist_ok=True)
                atomicfile.write_atomic(self.cache_file, json.dumps(cache).encode())
            except OSError as err:
                warn(f"cannot cache plugin versions in {self.cache_file}: {err}")
        return versions


class Invocation(Record):
    """What every delegated call shares: the runtime's version, CNI_PATH, the environment the
    delegates get (CNI_ARGS already without cni-switch's own keys) and the runtime-supplied
    values that plugins receive by capability."""

    cni_version: str
    path: Sequence[str]
    environ: Mapping[str, str]
    runtime_config: Mapping[str, Any]
    args: Mapping[str, Any] | None = None

    def env(self, command: str, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in self.environ.items() if not k.startswith("CNI_")}
        for key in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"):
            if key in self.environ:
                env[key] = self.environ[key]
        env.update(overrides)
        env["CNI_COMMAND"] = command
        env["CNI_PATH"] = os.pathsep.join(self.path)
        return env


class Delegate:
    """One network's plugins, driven for one invocation."""

    def __init__(self, network: Network, runner: Exec, versions: PluginVersions, call: Invocation) -> None:
        self.network = network
        self.runner = runner
        self.versions = versions
        self.call = call

    def _ceiling(self) -> str:
        own = self.network.cni_version
        if own and parse(own) < parse(self.call.cni_version):
            return own
        return self.call.cni_version

    def _version(self, executable: str, plugin_type: str, ceiling: str, env: Mapping[str, str]) -> str:
        supported = self.versions.get(executable, env)
        version = for_delegate(ceiling, supported)
        if version is None:
            raise CNIError(
                INCOMPATIBLE_VERSION,
                f"plugin {plugin_type} of network {self.network.key} supports no version we can use",
                f"it supports {supported}, we need one of <= {ceiling}",
            )
        return version

    def _config(self, plugin: dict[str, Any], version: str, prev: dict[str, Any] | None) -> dict[str, Any]:
        conf = dict(plugin)
        conf["name"] = self.network.name
        conf["cniVersion"] = version
        caps = plugin.get("capabilities")
        conf.pop("runtimeConfig", None)
        if isinstance(caps, dict):
            offered = {k: v for k, v in self.call.runtime_config.items() if caps.get(k)}
            if offered:
                conf["runtimeConfig"] = offered
        if self.call.args is not None and "args" not in conf:
            conf["args"] = dict(self.call.args)
        if prev is not None:
            conf["prevResult"] = convert_result(prev, version)
        return conf

    def plugin_version(self, plugin: Mapping[str, Any], env: Mapping[str, str]) -> str:
        """The version `plugin` of this network is spoken to in (code 7 when it is missing)."""
        exe = self.runner.find(plugin["type"], self.call.path)
        return self._version(exe, plugin["type"], self._ceiling(), env)

    def resolve(self) -> None:
        """Find every plugin of the chain and the version each is spoken to in, so a missing
        plugin or one that speaks no usable version fails the ADD before anything is done or
        recorded (add() then finds the versions in PluginVersions' memory)."""
        env = self.call.env("ADD")
        for plugin in self.network.plugins:
            exe = self.runner.find(plugin["type"], self.call.path)
            self._version(exe, plugin["type"], self._ceiling(), env)

    def add(self, env_overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
        """ADD through the chain; the final result in the runtime's version. On failure the
        caller undoes with `delete` (it knows whether a record needs to stay)."""
        env = self.call.env("ADD", **(env_overrides or {}))
        prev: dict[str, Any] | None = None
        for plugin in self.network.plugins:
            exe = self.runner.find(plugin["type"], self.call.path)
            version = self._version(exe, plugin["type"], self._ceiling(), env)
            out = self.runner.run(exe, self._config(plugin, version, prev), env)
            if out is None:
                raise CNIError(DELEGATE_FAILED, f"plugin {plugin['type']} returned no result")
            if problem := result_error(out):
                raise CNIError(DELEGATE_FAILED, f"plugin {plugin['type']} printed an unusable ADD result", problem)
            prev = convert_result(out, self.call.cni_version)
        assert prev is not None
        return prev

    def delete(
        self,
        prev: dict[str, Any] | None,
        env_overrides: Mapping[str, str] | None = None,
        release: tuple[int, Callable[[], None]] | None = None,
    ) -> None:
        """DEL in reverse order. Every plugin is asked even when one fails, so as much as
        possible is released; the first failure is raised afterwards. `release` (plugin index,
        call): called once that plugin's DEL succeeded, where its IPAM plugin would have released
        (the address is released only once the plugin that configured it is done with it)."""
        env = self.call.env("DEL", **(env_overrides or {}))
        first: CNIError | None = None
        for index in reversed(range(len(self.network.plugins))):
            plugin = self.network.plugins[index]
            try:
                exe = self.runner.find(plugin["type"], self.call.path)
                version = self._version(exe, plugin["type"], self._ceiling(), env)
                self.runner.run(exe, self._config(plugin, version, prev), env)
                if release is not None and release[0] == index:
                    release[1]()
            except CNIError as err:
                warn(f"DEL of {plugin['type']} in network {self.network.key} failed: {err}")
                first = first or err
        if first is not None:
            raise first

    def check(self, prev: dict[str, Any]) -> None:
        if self.network.disable_check:
            return
        env = self.call.env("CHECK")
        for plugin in self.network.plugins:
            exe = self.runner.find(plugin["type"], self.call.path)
            version = self._version(exe, plugin["type"], self._ceiling(), env)
            if not at_least(version, "0.4.0"):
                continue  # CHECK came with 0.4.0
            self.runner.run(exe, self._config(plugin, version, prev), env)

    def _newer_targets(
        self, env: Mapping[str, str], *, missing_is_error: bool, skip_ipam: str = ""
    ) -> list[tuple[str, dict[str, Any], str]]:
        """The executables that get GC/STATUS: (executable, plugin config, version >= 1.1.0);
        an IPAM plugin of type `skip_ipam` is left out (cni-switch runs it itself)."""
        targets = []
        for plugin in self.network.plugins:
            try:
                exe = self.runner.find(plugin["type"], self.call.path)
            except CNIError as err:
                if missing_is_error:
                    raise CNIError(NOT_AVAILABLE, str(err)) from None
                warn(f"network {self.network.key}: {err}")
                continue
            version = for_delegate(self.call.cni_version, self.versions.get(exe, env))
            if version is not None and at_least(version, GC_VERSION):
                targets.append((exe, plugin, version))
                continue
            ipam = plugin.get("ipam")
            if not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str) or ipam["type"] == skip_ipam:
                continue
            try:
                ipam_exe = self.runner.find(ipam["type"], self.call.path)
            except CNIError as err:
                if missing_is_error:
                    raise CNIError(NOT_AVAILABLE, str(err)) from None
                warn(f"network {self.network.key}: {err}")
                continue
            version = for_delegate(self.call.cni_version, self.versions.get(ipam_exe, env))
            if version is not None and at_least(version, GC_VERSION):
                targets.append((ipam_exe, plugin, version))
        return targets

    def gc(self, valid: list[dict[str, str]], done: set[str] | None = None, skip_ipam: str = "") -> None:
        """GC to every target; `done` (shared across networks) skips an IPAM plugin already
        collected with the same ipam section, so two networks over one ipamd cost one call.
        `skip_ipam`: an IPAM plugin type not to send GC to directly (cni-switch collected it)."""
        if self.network.disable_gc:
            return
        env = self.call.env("GC")
        first: CNIError | None = None
        for exe, plugin, version in self._newer_targets(env, missing_is_error=False, skip_ipam=skip_ipam):
            conf = self._config(plugin, version, None)
            conf["cni.dev/valid-attachments"] = valid
            key = exe + json.dumps(plugin.get("ipam")) if plugin["type"] != os.path.basename(exe) else ""
            if done is not None and key:
                if key in done:
                    continue
                done.add(key)
            try:
                self.runner.run(exe, conf, env)
            except CNIError as err:
                warn(f"GC of {os.path.basename(exe)} in network {self.network.key} failed: {err}")
                first = first or err
        if first is not None:
            raise first

    def status(self, skip_ipam: str = "") -> None:
        """STATUS of the plugins that speak it; an IPAM plugin of type `skip_ipam` is left out
        (cni-switch ran it itself)."""
        env = self.call.env("STATUS")
        for exe, plugin, version in self._newer_targets(env, missing_is_error=True, skip_ipam=skip_ipam):
            self.runner.run(exe, self._config(plugin, version, None), env)
