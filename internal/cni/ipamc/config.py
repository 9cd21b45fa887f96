"""tke-ipamc's `ipam` section:

"ipam": {"type": "tke-ipamc",
         "ipamd": "/run/tke/ipamd.sock",        (or {"address", "timeout", "tls"})
         "pool": "",                            (empty: the binding's pool, else any serving the node)
         "node": "",                            (empty: $TKE_NODE_NAME, $NODE_NAME, else the host name)
         "nodeIP": "",                          (lets ipamd match pools by node subnet)
         "releasePolicy": "podDelete",          (for pods without a binding: podDelete, immutable, never)
         "stateDir": "/var/lib/cni/tke-ipamc",  (queued releases while ipamd is unreachable)
         "releaseRetrySeconds": 2.0,            (how long DEL keeps trying before it queues)
         "gcMinAgeSeconds": 60}                 (GC spares younger allocations: ADDs racing it)
"""

from __future__ import annotations

import os

from tke.internal.cni.endpoint import IpamdEndpoint, path_option
from tke.internal.cni.errors import INVALID_NETWORK_CONFIG, CNIError
from tke.internal.cni.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_STATE_DIR = "/var/lib/cni/tke-ipamc"
RELEASE_POLICIES = ("podDelete", "immutable", "never")
KNOWN = frozenset(
    {"type", "ipamd", "pool", "node", "nodeIP", "releasePolicy", "stateDir", "releaseRetrySeconds", "gcMinAgeSeconds"}
)


class IpamcConfig(Record):
    ipamd: IpamdEndpoint
    pool: str
    node: str
    node_ip: str
    release_policy: str
    state_dir: str
    release_retry_seconds: float
    gc_min_age_seconds: int | None

    @classmethod
    def from_network(cls, config: Mapping[str, Any], environ: Mapping[str, str]) -> IpamcConfig:
        ipam = config.get("ipam")
        if not isinstance(ipam, dict):
            raise CNIError(INVALID_NETWORK_CONFIG, "ipam: the network configuration has no ipam section")
        unknown = sorted(set(ipam) - KNOWN)
        if unknown:
            raise CNIError(INVALID_NETWORK_CONFIG, f"ipam.{unknown[0]}: unknown option", f"known: {sorted(KNOWN)}")
        if "ipamd" not in ipam:
            raise CNIError(INVALID_NETWORK_CONFIG, "ipam.ipamd: the ipamd address is required")
        strings = {}
        for key in ("pool", "node", "nodeIP", "releasePolicy", "stateDir"):
            value = ipam.get(key, "")
            if not isinstance(value, str):
                raise CNIError(INVALID_NETWORK_CONFIG, f"ipam.{key}: expected a string")
            strings[key] = value
        policy = strings["releasePolicy"] or "podDelete"
        if policy not in RELEASE_POLICIES:
            raise CNIError(INVALID_NETWORK_CONFIG, f"ipam.releasePolicy: expected one of {list(RELEASE_POLICIES)}")
        retry = ipam.get("releaseRetrySeconds", 2.0)
        if isinstance(retry, bool) or not isinstance(retry, int | float) or retry < 0:
            raise CNIError(INVALID_NETWORK_CONFIG, "ipam.releaseRetrySeconds: expected a number >= 0")
        min_age = ipam.get("gcMinAgeSeconds")
        if min_age is not None and (isinstance(min_age, bool) or not isinstance(min_age, int) or min_age < 0):
            raise CNIError(INVALID_NETWORK_CONFIG, "ipam.gcMinAgeSeconds: expected a whole number >= 0")
        node = strings["node"] or environ.get("TKE_NODE_NAME") or environ.get("NODE_NAME") or os.uname().nodename
        return cls(
            ipamd=IpamdEndpoint.from_json(ipam["ipamd"], "ipam.ipamd"),
            pool=strings["pool"],
            node=node,
            node_ip=strings["nodeIP"],
            release_policy=policy,
            state_dir=path_option(strings["stateDir"], "ipam.stateDir") or DEFAULT_STATE_DIR,
            release_retry_seconds=float(retry),
            gc_min_age_seconds=min_age,
        )
