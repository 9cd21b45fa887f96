"""Where a tenant's objects may send the controller: the address policy of machine addresses
(SSH to a Machine's spec.ip, a cluster's spec.machines[].ip, the installed masters), a managed
VIP and an operator's control-plane endpoint, and an imported cluster's API server.

A tenant writes those addresses; the controller then dials them with the platform's own
network position. Without a rule, a tenant points the controller at the platform's own host
(loopback), the cloud metadata service (169.254.169.254, link-local) or any port anywhere,
and reads from the step's error which ports are open. So addresses in `denied_networks`
(loopback, link-local with the metadata addresses, unspecified, multicast, reserved and
broadcast, by default) are refused, unless they are also in `allowed_networks` (a lab whose
machines are on loopback, the project's own tests): by tke-apiserver when the object is
written (INVALID_ARGUMENT naming the field) and by tke-controller before it dials (an object
stored before the rule fails its step for good).

Both read the same `[machines]` table: configure tke-apiserver and tke-controller alike.

Covered: IP literals everywhere, in every spelling the system resolver or an HTTP client reads
as an address (`literal_address`: `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`, a
trailing dot, full-width digits and dots), and IPv6 addresses that carry an IPv4 address to a
translator (IPv4-mapped and -compatible, NAT64 `64:ff9b::/96`, 6to4, Teredo's client), judged
by that IPv4 address too; host names at the apiserver only when they always mean the local host
(`localhost`, `*.localhost`, the loopback names of distributions' /etc/hosts), and names that
are not ASCII (the resolver's IDNA 2003 and the HTTP client's IDNA 2008 turn `straße` into two
different names: the one checked would not be the one dialed); host names
the controller dials are resolved once per connection, every address checked, and the
connection made to one of those very addresses (`AddressPolicy.admitted`, `connect`): nothing
resolves the name again between the check and the connection, so a name whose DNS answers an
admitted address to the check and a refused one to the connection (DNS rebinding) cannot send
the controller there. The clients the controller dials with take their addresses from here:
SSH (`tke.internal.provider.ssh`) connects its socket with `connect`, and the HTTP client of
clusters' APIs (`tke.internal.provider.kube.transport`) with `admitted`. Not covered: addresses
outside these ranges that are sensitive on your network (add them to `denied_networks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENIED_NETWORKS = (
    "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the dialer's own host
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, with the cloud metadata address 169.254.169.254
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, with the broadcast address 255.255.255.255
    "::/128",  # unspecified
    "::1/128",  # loopback
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
    "fd00:ec2::254/128",  # EC2's metadata service over IPv6
)
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
ALLOW_HINT = "set machines.allowed_networks to allow it"


def _networks(values: Iterable[str], where: str) -> tuple[IPNetwork, ...]:
    out = []
    for i, value in enumerate(values):
        try:
            out.append(ipaddress.ip_network(value, strict=True))
        except ValueError as err:
            raise ValueError(f"{where}[{i}]: {value!r} is not a CIDR such as 127.0.0.0/8 ({err})") from None
    return tuple(out)


@dataclass(frozen=True)
class AddressConfig:
    """`[machines]` of tke-apiserver's and tke-controller's configuration."""

    # Networks a tenant's objects may not send the controller to (replaces the default list).
    denied_networks: list[str] = field(default_factory=lambda: list(DEFAULT_DENIED_NETWORKS))
    # Exceptions to denied_networks, for labs and tests whose machines are on loopback: for
    # example ["127.0.0.0/8", "::1/128"].
    allowed_networks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _networks(self.denied_networks, "machines.denied_networks")
        _networks(self.allowed_networks, "machines.allowed_networks")


# Names that mean the local host wherever they are looked up: RFC 6761's `localhost` and its
# subdomains, and the loopback names distributions put in /etc/hosts.
LOCAL_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "localhost4", "localhost6", "localhost6.localdomain6", "ip6-localhost"}
    | {"ip6-loopback", "localhost4.localdomain4"}
)
# The dots IDNA reads as label separators (UTS #46), beside ".".
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# What inet_aton, and so getaddrinfo, reads as an IPv4 address: one to four parts, each
# decimal, octal (leading 0) or hex (0x), the last filling the bytes left (`127.1`, `2130706433`).
_INET_ATON = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")
# Translators' prefixes: NAT64's well-known one (RFC 6052) sends 64:ff9b::a.b.c.d to a.b.c.d,
# its local-use one (RFC 8215, as a /96 at its end, the usual length) and SIIT's IPv4-translated
# addresses (RFC 2765, ::ffff:0:a.b.c.d) the same way.
_TRANSLATED = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def literal_address(host: str) -> IPAddress | None:
    """The address a host as written means without any lookup, None for a name. Every spelling
    the system resolver (getaddrinfo reads inet_aton's forms: `127.1`, `0x7f000001`,
    `0177.0.0.1`, `2130706433`) or an HTTP client (IDNA maps full-width digits and dots to
    ASCII) turns into an address counts, with brackets and a trailing dot, so no spelling of a
    refused address passes as a name."""
    text = unicodedata.normalize("NFKC", host.strip()).translate(_DOTS)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.rstrip(".") if "." in text else text
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _INET_ATON.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _embedded(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address hands to a translator or tunnel (NAT64, the deprecated
    IPv4-compatible form, 6to4, Teredo's client), which is where a packet to it may end up."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if any(ip in n for n in _TRANSLATED) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _what(ip: IPAddress, network: IPNetwork) -> str:
    """What kind of address `ip` is, and why the platform does not go there."""
    if ip in METADATA_ADDRESSES:
        return "the cloud metadata service's address; the platform does not send its requests there"
    if ip.is_loopback:
        return "a loopback address; the platform does not log in to its own host"
    if ip.is_unspecified or ip in ipaddress.ip_network("0.0.0.0/8"):
        return "an unspecified address, which reaches the platform's own host"
    if ip.is_link_local:
        return "a link-local address (the platform host's own link and the cloud metadata service)"
    if ip.is_multicast:
        return "a multicast address, not a machine"
    if ip.is_reserved or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "a reserved or broadcast address, not a machine"
    return f"in the denied network {network}"


class Resolver(Protocol):
    """Where the controller looks host names up (the seam that tests answer for)."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` has now for a TCP connection to `port`, in the order to try
        them; OSError (socket.gaierror) when it has none."""
        ...


class SystemResolver:
    """The host's resolver, through the event loop (getaddrinfo in a thread)."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        out: list[IPAddress] = []
        for info in infos:
            try:
                # An IPv6 link-local answer keeps its zone ("fe80::1%eth0"): it is needed to connect.
                ip = ipaddress.ip_address(str(info[4][0]))
            except ValueError:
                continue
            if ip not in out:
                out.append(ip)
        return out


class AddressRefused(Exception):
    """The policy refuses a host the controller was about to connect to; the text says why
    (a step's error: permanent, the object has to change)."""


class AddressPolicy:
    def __init__(self, config: AddressConfig | None = None, resolver: Resolver | None = None) -> None:
        config = config or AddressConfig()
        self.denied = _networks(config.denied_networks, "machines.denied_networks")
        self.allowed = _networks(config.allowed_networks, "machines.allowed_networks")
        self.resolver: Resolver = resolver or SystemResolver()

    def refusal(self, ip: IPAddress) -> str | None:
        """Why the controller may not be sent to `ip` (None: it may)."""
        ip = _unmapped(ip)
        if self._allowed(ip):
            return None
        if network := self._denied(ip):
            return f"{ip} is {_what(ip, network)}: {ALLOW_HINT}"
        inner = _embedded(ip)
        if inner is not None and not self._allowed(inner) and (network := self._denied(inner)):
            return f"{ip} leads to {inner}, which is {_what(inner, network)}: {ALLOW_HINT}"
        return None

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.allowed)

    def _denied(self, ip: IPAddress) -> IPNetwork | None:
        return next((n for n in self.denied if ip.version == n.version and ip in n), None)

    def host_refusal(self, host: str) -> str | None:
        """Why a host as written (an IP address, or a name) is refused without resolving it:
        an address the policy refuses, or a name that always means the local host."""
        ip = literal_address(host)
        if ip is None:
            name = unicodedata.normalize("NFKC", host.strip()).translate(_DOTS).rstrip(".").lower()
            if name in LOCAL_NAMES or name.endswith(".localhost"):
                if self.refusal(ipaddress.IPv4Address("127.0.0.1")) is None:
                    return None
                return f"{host} names the local host; the platform does not go to its own host: {ALLOW_HINT}"
            if not host.isascii():
                # The resolver (IDNA 2003: "straße" is strasse) and the HTTP client (IDNA 2008:
                # xn--strae-oqa) look up different names: the one checked is not the one dialed.
                return (
                    f"{host!r} is not an ASCII host name, which resolvers and HTTP clients spell differently "
                    "(IDNA 2003 or 2008): write it in its ASCII form (xn--...)"
                )
            return None
        err = self.refusal(ip)
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host.strip("[]"))
            return err  # an address in its usual spelling: the message names it
        return err and f"{host} is read as {ip}: {err}"

    async def admitted(self, host: str, port: int) -> list[IPAddress]:
        """The addresses the controller may connect to for `host`, from one resolution: the
        host as written (host_refusal), then every address it resolves to now, each admitted;
        AddressRefused otherwise. A name that does not resolve raises the resolver's OSError,
        as the connection would have failed. Connect only to these: looking the name up again
        may answer otherwise (DNS rebinding)."""
        if refused := self.host_refusal(host):
            raise AddressRefused(refused)
        literal = literal_address(host)
        if literal is not None:
            return [literal]
        try:
            addresses = await self.resolver.resolve(host, port)
        except UnicodeError as err:  # a label IDNA cannot encode (empty, over 63 characters)
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not a name the resolver can look up: {err}") from None
        if not addresses:
            raise socket.gaierror(socket.EAI_NODATA, f"{host} has no address")
        for ip in addresses:
            if refused := self.refusal(ip):
                raise AddressRefused(f"{host} resolves to {refused}")
        return addresses

    async def connect(self, host: str, port: int) -> socket.socket:
        """A TCP socket connected to `host`:`port` at one of the addresses `admitted` gives,
        tried in their order (the last one's OSError when none accepts)."""
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for ip in await self.admitted(host, port):
            sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, (str(ip), port))
                return sock
            except OSError as err:
                sock.close()
                failure = err
            except BaseException:
                sock.close()
                raise
        assert failure is not None  # admitted returns at least one address
        raise failure


def url_host(url: str) -> tuple[str, int]:
    """The host and port (443 by default) of an https URL ("", 0 when it has none)."""
    try:
        parts = urlsplit(url)
        return parts.hostname or "", parts.port or 443
    except ValueError:
        return "", 0


def server_key(url: str) -> tuple[str, str, int, str] | None:
    """An API server URL in one spelling, to compare a cluster's URL with a credential's:
    (scheme, host in lower case or as a compressed address, port with https' default, path
    without a trailing slash). None for what is not an http(s) URL with a host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        return None
    host = parts.hostname.rstrip(".").lower()
    with contextlib.suppress(ValueError):
        host = str(_unmapped(ipaddress.ip_address(host)))
    return scheme, host, port or (443 if scheme == "https" else 80), parts.path.rstrip("/")
