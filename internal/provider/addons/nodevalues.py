"""Values only a node knows, which the network add-on's CNI configuration leaves to the node's
installer (tke-cni-install): the rendered configuration holds these placeholders as whole string
values, and `fill` replaces them. Pure, and free of the platform's protos, so that the node's
installer can use it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NODE_NAME = "@NODE_NAME@"  # the Kubernetes node name (pod spec.nodeName)
NODE_IP = "@NODE_IP@"  # the node's address (pod status.hostIP)
NODE_POD_CIDR = "@NODE_POD_CIDR@"  # the node's pod range (Node spec.podCIDR, from the API)
PLACEHOLDERS = (NODE_NAME, NODE_IP, NODE_POD_CIDR)


def used(obj: Any) -> set[str]:
    """The placeholders `obj` (JSON) holds."""
    if isinstance(obj, str):
        return {obj} & set(PLACEHOLDERS)
    if isinstance(obj, Mapping):
        return set().union(*(used(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(used(v) for v in obj)) if obj else set()
    return set()


def fill(obj: Any, values: Mapping[str, str]) -> Any:
    """`obj` (JSON) with every placeholder string replaced by its value in `values`."""
    if isinstance(obj, str):
        return values.get(obj, obj) if obj in PLACEHOLDERS else obj
    if isinstance(obj, Mapping):
        return {k: fill(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fill(v, values) for v in obj]
    return obj
