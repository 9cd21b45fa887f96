"""Pools: validating a pool definition, numbering its addresses, which nodes and namespaces it
serves, and which addresses two pools would both hand out. Pure functions over the proto.

Pools share one address space: no address is allocatable in two pools (they may share a
subnet, and its gateway, when their ranges are disjoint). A pool's allocatable addresses depend
only on its immutable fields (cidr, gateway, ranges, excluded), so the check is made once, when
it is created."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tke.internal.ipamd.allocator import Layout, layout
from tke.internal.rpc.errors import FieldViolation
from tke.ipam.v1 import ipam_pb2

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# An entry of pool.namespaces: a namespace name, or a prefix ending in "*".
_NAMESPACES = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$|^[a-z0-9][-a-z0-9]{0,61}\*$")
MAX_CAPACITY = 1 << 20  # a /12 at most: blocks are listed in memory per pool


def gateway_of(pool: ipam_pb2.Pool) -> str:
    if pool.gateway:
        return pool.gateway
    net = ipaddress.IPv4Network(pool.cidr)
    return str(net.network_address + 1)


def pool_layout(pool: ipam_pb2.Pool) -> Layout:
    return layout(pool.cidr, gateway_of(pool), [(r.start, r.end) for r in pool.ranges], list(pool.excluded))


def _ip(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _cidr(value: str, strict: bool = False) -> bool:
    try:
        ipaddress.IPv4Network(value, strict=strict)
    except ValueError:
        return False
    return True


def validate_pool(pool: ipam_pb2.Pool, known_providers: set[str]) -> list[FieldViolation]:
    """Every problem of a pool to create, field by field."""
    v: list[FieldViolation] = []
    if not _LABEL.fullmatch(pool.name):
        v.append(FieldViolation("pool.name", "must be a DNS-1123 label: lowercase letters, digits and '-'"))
    if not pool.cidr:
        v.append(FieldViolation("pool.cidr", "required"))
    elif not _cidr(pool.cidr, strict=True):
        v.append(FieldViolation("pool.cidr", f"{pool.cidr!r} is not an IPv4 network address with prefix"))
    net = ipaddress.IPv4Network(pool.cidr) if pool.cidr and _cidr(pool.cidr, strict=True) else None
    if net is not None and net.prefixlen > 31:
        # A pod's address needs a gateway inside its subnet: a /32 holds only one of the two
        # (the default gateway, the network address + 1, would lie outside it).
        v.append(FieldViolation("pool.cidr", "must hold a gateway and an address: a /31 or larger"))
    if pool.gateway and (not _ip(pool.gateway) or (net and ipaddress.IPv4Address(pool.gateway) not in net)):
        v.append(FieldViolation("pool.gateway", "must be an IPv4 address inside pool.cidr"))
    for i, r in enumerate(pool.ranges):
        for name, value in (("start", r.start), ("end", r.end)):
            if not _ip(value) or (net and ipaddress.IPv4Address(value) not in net):
                v.append(FieldViolation(f"pool.ranges[{i}].{name}", "must be an IPv4 address inside pool.cidr"))
    for i, e in enumerate(pool.excluded):
        if not _cidr(e):
            v.append(FieldViolation(f"pool.excluded[{i}]", "must be an IPv4 address or CIDR"))
    for i, s in enumerate(pool.node_subnets):
        if not _cidr(s):
            v.append(FieldViolation(f"pool.node_subnets[{i}]", "must be an IPv4 CIDR"))
    for i, n in enumerate(pool.namespaces):
        if not _NAMESPACES.fullmatch(n):
            v.append(
                FieldViolation(f"pool.namespaces[{i}]", "a namespace name, or a prefix ending in '*' such as 'shop-*'")
            )
    for i, route in enumerate(pool.routes):
        if not _cidr(route.dst):
            v.append(FieldViolation(f"pool.routes[{i}].dst", "must be an IPv4 CIDR"))
        if route.gw and not _ip(route.gw):
            v.append(FieldViolation(f"pool.routes[{i}].gw", "must be an IPv4 address"))
    for i, ns in enumerate(pool.dns.nameservers):
        if not _ip(ns):
            v.append(FieldViolation(f"pool.dns.nameservers[{i}]", "must be an IPv4 address"))
    if not 0 <= pool.vlan <= 4094:
        v.append(FieldViolation("pool.vlan", "must be between 0 and 4094"))
    if pool.cooldown_seconds < 0:
        v.append(FieldViolation("pool.cooldown_seconds", "must not be negative"))
    provider = pool.provider.name or "static"
    if provider not in known_providers:
        known = ", ".join(sorted(known_providers))
        v.append(FieldViolation("pool.provider.name", f"no IP provider {provider!r} is configured (have: {known})"))
    if provider != "static" and not pool.provider.subnet_id:
        v.append(FieldViolation("pool.provider.subnet_id", f"required for provider {provider!r}"))
    if not v:
        try:
            numbered = pool_layout(pool)
        except ValueError as err:
            v.append(FieldViolation("pool.ranges", str(err)))
        else:
            if numbered.size == 0:
                v.append(FieldViolation("pool.ranges", "the pool has no address to hand out"))
            elif numbered.size > MAX_CAPACITY:
                v.append(FieldViolation("pool.cidr", f"at most {MAX_CAPACITY} addresses per pool (a /12)"))
    return v


@dataclass(frozen=True)
class Overlap:
    """Addresses [first, last] that `pool` would share with `other`."""

    other: str
    first: str
    last: str


def overlap(pool: ipam_pb2.Pool, others: Iterable[ipam_pb2.Pool]) -> Overlap | None:
    """The first pool of `others` (another name) that hands out an address `pool` would, and
    the first addresses they share. Pools must be valid (validate_pool)."""
    mine = pool_layout(pool).segments
    for other in others:
        if other.name == pool.name:
            continue
        theirs = pool_layout(other).segments
        for a in mine:
            for b in theirs:
                lo, hi = max(a.first, b.first), min(a.last, b.last)
                if lo <= hi:
                    return Overlap(other.name, str(ipaddress.IPv4Address(lo)), str(ipaddress.IPv4Address(hi)))
    return None


def serves(pool: ipam_pb2.Pool, node: str, node_ip: str) -> bool:
    """Whether the pool hands out addresses to containers of this node."""
    if not pool.node_subnets and not pool.node_names:
        return True
    if node in pool.node_names:
        return True
    if node_ip and _ip(node_ip):
        addr = ipaddress.IPv4Address(node_ip)
        return any(addr in ipaddress.IPv4Network(s, strict=False) for s in pool.node_subnets)
    return False


def admits(pool: ipam_pb2.Pool, namespace: str) -> bool:
    """Whether pods of `namespace` may take new addresses from the pool (empty: every namespace)."""
    return not pool.namespaces or any(
        namespace == n or (n.endswith("*") and namespace.startswith(n[:-1])) for n in pool.namespaces
    )
