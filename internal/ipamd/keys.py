"""Record keys shared by the IP storage implementations: which index entries an allocation
has, and the sortable form of an address.

The node index holds every address a node holds: those attached to its containers, and the fixed
ones retained since their last container there (under `RETAINED_KEY`, which no container id can
be: they begin with a letter or a digit). So one count of the node's entries is what the node rule
limits (tke.internal.ipamd.noderule), and a retained address moves its entry, and its count, to
the node that takes it over, in the same write."""

from __future__ import annotations

import ipaddress

from tke.internal.ipamd.storage import allocation_owner_key, is_fixed
from tke.ipam.v1 import ipam_pb2

# Where a node's retained addresses sit in its part of the node index (see the module docstring).
RETAINED_KEY = "~retained"


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
    elif a.node and a.state == ipam_pb2.ALLOCATION_STATE_RETAINED:
        out["node"] = f"{a.node}/{RETAINED_KEY}/{a.pool}/{address_key(a.ip)}"
    if is_fixed(a):
        out["owner"] = allocation_owner_key(a)
    return out
