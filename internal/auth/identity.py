"""The caller's identity, as authenticators produce it and the rest of the server reads it.

The request interceptor chain stores it in a context variable for the duration of a call.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field

# Members of this group act on every tenant (Kubernetes' system:masters, by another name).
PLATFORM_ADMINS = "tke:platform-admins"
DEFAULT_TENANT = "default"
# A node's identity, as Kubernetes names a kubelet's: user "system:node:<name>" in group
# "system:nodes" (both, as Kubernetes' NodeRestriction requires). Being a node only ever takes
# rights away (a node acts on its own node's objects only), never grants any.
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
# Identity.extra key: when the credential that proved the identity expires (seconds since the
# epoch), for the authenticators that know it; an open stream ends by then (recheck.py).
EXPIRES = "token-expires"


@dataclass(frozen=True)
class Identity:
    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    tenant_id: str = DEFAULT_TENANT
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_platform_admin(self) -> bool:
        return PLATFORM_ADMINS in self.groups

    @property
    def expires_at(self) -> float | None:
        """When the credential expires (seconds since the epoch), or None: not known, or never."""
        values = self.extra.get(EXPIRES)
        try:
            return float(values[0]) if values else None
        except ValueError:
            return None

    @property
    def node(self) -> str | None:
        """The node this identity is (its name, possibly empty), or None if it is no node."""
        if NODES_GROUP in self.groups and self.user.startswith(NODE_USER_PREFIX):
            return self.user.removeprefix(NODE_USER_PREFIX)
        return None


# With authentication switched off every caller is this identity: development only.
ANONYMOUS_ADMIN = Identity(user="system:anonymous", groups=(PLATFORM_ADMINS,))

current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("identity", default=ANONYMOUS_ADMIN)
