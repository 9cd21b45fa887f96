"""cni-switch running the tke-ipamc of a delegate network itself, so that an ADD+DEL through such a
network starts two Python processes (cni-switch per verb) instead of four (and tke-ipamc's).

For a delegate plugin whose `ipam.type` is tke-ipamc, cni-switch makes tke-ipamc's calls to
tke-ipamd with tke-ipamc's own code (tke.internal.cni.ipamc, imported only by the verbs that call
ipamd), from the same `ipam` section, CNI_ARGS and environment tke-ipamc would have had, and runs
the delegate with that `ipam` replaced by the `static` IPAM plugin of containernetworking-plugins
holding what ipamd answered:

    {"type": "static", "addresses": [{"address", "gateway"}], "routes": [{"dst", "gw"}],
     "dns": {"nameservers", "domain", "search", "options"}}

static hands the main plugin exactly the ips, routes and DNS tke-ipamc would have printed, so the
result is the same. Per verb:

- ADD: allocate (tke-ipamc's ADD: a queued release of the same attachment replayed first, then
  Allocate), then the delegate's ADD with static. The attachment record says `ipam: "switch"`
  from before the allocation on (tke.internal.cni.switch.state).
- DEL: the delegate's DEL with static (which holds nothing), and tke-ipamc's DEL (Release; retried
  for releaseRetrySeconds, then queued in its stateDir, code 11 only when it cannot be queued)
  right after the DEL of the plugin that has the `ipam` section succeeded: where that plugin ran
  tke-ipamc's DEL before, once the link holding the address is gone.
- CHECK: tke-ipamc's CHECK (ipamd still holds the address prevResult names), then the delegate's
  CHECK with static holding prevResult's addresses.
- GC: tke-ipamc's GC (replay the queue, GarbageCollect of the node with the valid attachments);
  the delegate's plugins get GC as before, except tke-ipamc itself.
- STATUS: tke-ipamc's STATUS (ipamd's health: code 50 when it does not answer), then the
  delegate's plugins' STATUS as before, except tke-ipamc itself. A runtime may ask STATUS every
  few seconds (its network readiness), so this saves a Python start on every node that often.

The path is taken for a network when all of these hold, else its delegate runs tke-ipamc as
before and `choose` says why on stderr:
- exactly one plugin of the network has an `ipam` section of type tke-ipamc;
- cni-switch's own configuration has `ipamd`: without it cni-switch never calls tke-ipamd itself;
- static is in CNI_PATH and speaks the version that plugin is spoken to in (it gets the
  plugin's configuration, version included, from the plugin), and so does tke-ipamc (a plugin
  spoken to in 0.x got code 1 from tke-ipamc, and still does);
- static would add no address of its own: CNI_ARGS has no IP or GATEWAY, the plugin has no
  `args.cni.ips` and is handed no `ips` runtime capability (static honours all three);
- static accepts CNI_ARGS: none, or with IgnoreUnknown=1 (kubelet, containerd and podman send it;
  static's ADD refuses unknown keys without it, which tke-ipamc accepted).
A recorded attachment follows its record: DEL, CHECK and GC of an attachment added this way use
static whenever it is still in CNI_PATH (else the delegate's tke-ipamc releases, as it would
have); one added through the delegate's tke-ipamc is deleted through it.
"""

from __future__ import annotations

from tke.internal.cni import jsonio as json
from tke.internal.cni.args import ignore_unknown, parse_args
from tke.internal.cni.errors import CNIError
from tke.internal.cni.skel import Request, warn
from tke.internal.cni.version import SUPPORTED, at_least

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from tke.internal.cni.invoke import Exec
    from tke.internal.cni.ipamc.plugin import Ipamc
    from tke.internal.cni.switch.config import Network
    from tke.internal.cni.switch.delegate import Invocation, PluginVersions

    VersionOf = Callable[[Mapping[str, Any]], str]

IPAMC = "tke-ipamc"
STATIC = "static"
# What the delegate's DEL gets: static's DEL holds and checks nothing.
STATIC_DEL: dict[str, Any] = {"type": STATIC}


def ipamc_index(network: Network) -> int | None:
    """The index of the one plugin whose IPAM is tke-ipamc; None when none has it, or several."""
    found = [
        i for i, p in enumerate(network.plugins) if isinstance(p.get("ipam"), dict) and p["ipam"].get("type") == IPAMC
    ]
    return found[0] if len(found) == 1 else None


def static_section(result: Any) -> dict[str, Any]:
    """static's `ipam` section that gives back `result`'s ips (address, gateway), routes and DNS."""
    section: dict[str, Any] = {"type": STATIC, "addresses": []}
    if not isinstance(result, dict):
        return section
    for ip in result.get("ips") or []:
        if isinstance(ip, dict) and ip.get("address"):
            section["addresses"].append({k: ip[k] for k in ("address", "gateway") if ip.get(k)})
    routes = result.get("routes")
    if isinstance(routes, list):
        section["routes"] = [{k: r[k] for k in ("dst", "gw") if r.get(k)} for r in routes if isinstance(r, dict)]
    dns = result.get("dns")
    if isinstance(dns, dict):
        section["dns"] = dns
    return section


class Inline:
    """One delegate network's tke-ipamc, run inside cni-switch for one invocation."""

    def __init__(self, network: Network, index: int, call: Invocation) -> None:
        self.network = network
        self.index = index
        self.call = call
        self.released = False  # this invocation's release is done (or queued)

    @property
    def plugin(self) -> dict[str, Any]:
        return self.network.plugins[self.index]

    def with_ipam(self, section: dict[str, Any]) -> Network:
        """The network with the plugin's `ipam` section replaced."""
        plugins = list(self.network.plugins)
        plugins[self.index] = {**plugins[self.index], "ipam": section}
        return self.network.replace(plugins=tuple(plugins))

    def _ipamc(self, command: str, **extra: Any) -> tuple[Ipamc, Request]:
        """tke-ipamc's verb object and the request it would have been started with: the
        plugin's configuration (its `ipam` section), the delegate's CNI_* and environment."""
        from tke.internal.cni.ipamc.plugin import Ipamc

        env = self.call.env(command)
        request = Request(
            command=command,
            config={**self.plugin, "name": self.network.name, **extra},
            container_id=env.get("CNI_CONTAINERID", ""),
            netns=env.get("CNI_NETNS", ""),
            ifname=env.get("CNI_IFNAME", ""),
            args=env.get("CNI_ARGS", ""),
            path=tuple(self.call.path),
            environ=env,
        )
        return Ipamc.real(request), request

    def prepare(self) -> None:
        """tke-ipamc's configuration checked (code 7) before the ADD writes anything."""
        from tke.internal.cni.ipamc.config import IpamcConfig

        IpamcConfig.from_network(self.plugin, self.call.env("ADD"))

    def allocate(self) -> dict[str, Any]:
        """tke-ipamc's ADD: the IPAM result (ips, routes, dns)."""
        ipamc, request = self._ipamc("ADD")
        return ipamc.add(request)

    def release(self) -> None:
        """tke-ipamc's DEL: released, or queued while ipamd is unreachable."""
        ipamc, request = self._ipamc("DEL")
        ipamc.delete(request)
        self.released = True

    def check(self, expected: dict[str, Any]) -> None:
        ipamc, request = self._ipamc("CHECK", prevResult=expected)
        ipamc.check(request)

    def status(self) -> None:
        """tke-ipamc's STATUS: whether ipamd answers (code 50 when it does not)."""
        ipamc, request = self._ipamc("STATUS")
        ipamc.status(request)

    def gc(self, valid: list[dict[str, str]], done: set[str]) -> None:
        """tke-ipamc's GC, once per ipam section across networks (`done`, shared with the
        delegates' GC)."""
        key = IPAMC + json.dumps(self.plugin["ipam"])
        if key in done:
            return
        done.add(key)
        ipamc, request = self._ipamc("GC", **{"cni.dev/valid-attachments": valid})
        ipamc.gc(request)


def _static_speaks(inline: Inline, runner: Exec, versions: PluginVersions, version: str) -> str:
    """Why static cannot stand in for tke-ipamc under a plugin spoken to in `version` ('' when it can)."""
    env = inline.call.env("VERSION")
    try:
        exe = runner.find(STATIC, inline.call.path)
        supported = versions.get(exe, env)
    except CNIError as err:
        return f"no usable {STATIC} IPAM plugin: {err}"
    if version not in supported:
        return f"{STATIC} speaks {supported}, not {version}"
    return ""


def choose(
    network: Network, call: Invocation, version_of: VersionOf, runner: Exec, versions: PluginVersions, *, ipamd: bool
) -> Inline | None:
    """The Inline of `network` when cni-switch runs its tke-ipamc for this verb (ADD, or DEL
    without a record); None when it has none or its delegate runs it (said on stderr, with why).
    `version_of(plugin)`: the version the delegate speaks to that plugin in."""
    index = ipamc_index(network)
    if index is None:
        if any(isinstance(p.get("ipam"), dict) and p["ipam"].get("type") == IPAMC for p in network.plugins):
            _fallback(network, "more than one of its plugins has tke-ipamc")
        return None
    inline = Inline(network, index, call)
    why = _why_not(inline, call, version_of, runner, versions, ipamd=ipamd)
    if why:
        _fallback(network, why)
        return None
    return inline


def _why_not(
    inline: Inline, call: Invocation, version_of: VersionOf, runner: Exec, versions: PluginVersions, *, ipamd: bool
) -> str:
    if not ipamd:
        return "cni-switch has no ipamd"
    pairs = parse_args(call.environ.get("CNI_ARGS", ""))
    if "IP" in pairs or "GATEWAY" in pairs:
        return f"CNI_ARGS has IP or GATEWAY, which {STATIC} would apply"
    if pairs and not ignore_unknown(pairs):
        return f"CNI_ARGS without IgnoreUnknown=1, whose other keys {STATIC} would refuse"
    plugin = inline.plugin
    args = plugin.get("args") if "args" in plugin else call.args
    if isinstance(args, dict) and isinstance(args.get("cni"), dict) and args["cni"].get("ips"):
        return f"args.cni.ips, which {STATIC} would apply"
    caps = plugin.get("capabilities")
    if isinstance(caps, dict) and caps.get("ips") and call.runtime_config.get("ips"):
        return f"the ips runtime capability, which {STATIC} would apply"
    try:
        version = version_of(plugin)
    except CNIError:
        return ""  # the plugin itself is unusable: the delegate's own checks say so
    if version not in SUPPORTED:
        return f"{IPAMC} does not speak {version}, the version the plugin hands its IPAM"
    return _static_speaks(inline, runner, versions, version)


def recorded(
    network: Network, call: Invocation, version_of: VersionOf, runner: Exec, versions: PluginVersions
) -> Inline | None:
    """The Inline of an attachment whose record says cni-switch holds its address; None when
    static cannot be run any more (the delegate's tke-ipamc then releases instead)."""
    index = ipamc_index(network)
    if index is None:
        return None
    inline = Inline(network, index, call)
    try:
        version = version_of(inline.plugin)
    except CNIError:
        version = ""
    why = _static_speaks(inline, runner, versions, version) if version else "its plugin is unusable"
    if why:
        _fallback(network, why)
        return None
    return inline


def checks_ipam(version: str) -> bool:
    """CHECK came with 0.4.0: a plugin spoken to in an older version gets none, nor its IPAM."""
    return at_least(version, "0.4.0")


def _fallback(network: Network, why: str) -> None:
    warn(f"network {network.key}: its {IPAMC} runs in the delegate ({why})")
