"""An allocation from tke-ipamd as a CNI IPAM result (ips, routes, dns; no interfaces: the
main plugin fills those in)."""

from __future__ import annotations

from tke.internal.cni.errors import INVALID_NETWORK_CONFIG, CNIError
from tke.internal.cni.version import result_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from tke.internal.cni.ipamwire import DNS, Route


def ipam_result(address: str, gateway: str, routes: Iterable[Route], dns: DNS | None) -> dict[str, Any]:
    ip: dict[str, Any] = {"address": address}
    if gateway:
        ip["gateway"] = gateway
    out: dict[str, Any] = {"ips": [ip]}
    # A route without gw goes via the address's gateway, which is what an empty gw means to ipamd.
    out["routes"] = [{"dst": r.dst, **({"gw": r.gw} if r.gw else {})} for r in routes]
    dns_out: dict[str, Any] = {}
    if dns is not None:
        if dns.nameservers:
            dns_out["nameservers"] = list(dns.nameservers)
        if dns.domain:
            dns_out["domain"] = dns.domain
        if dns.search:
            dns_out["search"] = list(dns.search)
        if dns.options:
            dns_out["options"] = list(dns.options)
    out["dns"] = dns_out
    return out


def addresses(result: Any) -> set[str]:
    """The addresses (CIDR form) a result lists; none without a result. A prevResult that is
    no CNI result is an invalid configuration (code 7)."""
    if result is None:
        return set()
    if problem := result_error(result):
        raise CNIError(INVALID_NETWORK_CONFIG, "prevResult is not a CNI result", problem)
    return {str(ip.get("address")) for ip in result.get("ips", []) if isinstance(ip, dict) and ip.get("address")}
