"""Record keys shared by the IP storage implementations: which index entries an allocation
has, and the sortable form of an address."""

from __future__ import annotations

import ipaddress

from tke.internal.ipamd.storage import allocation_owner_key, is_fixed
from tke.ipam.v1 import ipam_pb2


def address_key(ip: str) -> str:
    """An address as 8 hex digits, so that key order is address order."""
    return f"{int(ipaddress.IPv4Address(ip)):08x}"


def attachment_key(container_id: str, ifname: str) -> str:
    return f"{container_id}/{ifname}"


def indexes(a: ipam_pb2.Allocation) -> dict[str, str]:
    """The index entries of an allocation, by kind ("attachment", "node", "owner") to key."""
    out = {}
    if a.container_id:
        out["attachment"] = attachment_key(a.container_id, a.ifname)
        out["node"] = f"{a.node}/{a.container_id}/{a.ifname}"
    if is_fixed(a):
        out["owner"] = allocation_owner_key(a)
    return out
