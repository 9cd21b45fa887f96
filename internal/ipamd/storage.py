"""The IP storage contract: where pools, bindings and allocations are kept, in IPAM's words.

Every mutation is one atomic compare-and-swap over all the records it touches:
- `reserve` takes an address: it writes the address's block (compared at its version), the
  allocation and its indexes (the container's interface, the node's attachment, the fixed
  owner), and fails without writing anything if the pool, the block, the interface or the owner
  changed or is taken. So no address and no interface ever has two owners.
- `replace` rewrites an allocation compared at its version (attach to another container,
  detach, change of policy), moving its indexes along; `release` removes it and clears its bit in
  the block (compared at both versions).
- Pools are created against the version of the whole set of pools (`pool_set`): a create
  compares it, so two pools checked against the same set (for overlapping addresses) cannot
  both be stored.
- A namespace's bindings have a version too (`namespace_bindings`): every put or delete of one
  of them changes it. A `reserve` or `replace` decided on a namespace's bindings may carry the
  version it saw and then applies only if it is unchanged, so a replica may keep the bindings
  in memory (tke.internal.ipamd.hints) and still never allocate on a binding that is gone.
- A lost race is an outcome (`Lost`), not an exception: the caller re-reads and decides.
- Implementation errors never escape: unreachable storage is `StorageUnavailable`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from tke.internal.ipamd.allocator import Block
from tke.internal.storage.store import Unavailable
from tke.ipam.v1 import ipam_pb2


class StorageUnavailable(Unavailable):
    """The storage cannot be reached or did not answer in time (the servers' error
    interceptor turns it into UNAVAILABLE)."""


class PoolExists(Exception):
    """create_pool found a pool of that name."""


@dataclass(frozen=True)
class PoolEntry:
    """A stored pool. `deleting` is set while DeletePool checks that it is unused; every
    reserve compares `version`, so no address is taken from a pool being deleted."""

    pool: ipam_pb2.Pool
    version: int
    deleting: bool = False


@dataclass(frozen=True)
class PoolSet:
    """Every pool, and the version of the set: every create_pool changes it (0: no pool was
    ever created)."""

    pools: list[PoolEntry]
    version: int


@dataclass(frozen=True)
class NamespaceBindings:
    """A namespace's bindings, read no earlier than `version` (every put or delete of a binding
    of the namespace changes it; 0: none was ever written)."""

    namespace: str
    bindings: list[ipam_pb2.Binding]
    version: int


@dataclass(frozen=True)
class Stored:
    """A stored allocation and its version."""

    allocation: ipam_pb2.Allocation
    version: int


class Lost(enum.Enum):
    """Why a compare-and-swap did not apply."""

    POOL = "pool changed"
    POOL_SET = "a pool was created meanwhile"
    BLOCK = "block changed"
    ALLOCATION = "allocation changed"
    ATTACHMENT = "the interface already has an address"
    OWNER = "the owner already has a fixed address"
    BINDINGS = "the namespace's bindings changed"


FIXED_POLICIES = (ipam_pb2.RELEASE_POLICY_IMMUTABLE, ipam_pb2.RELEASE_POLICY_NEVER)


def is_fixed(a: ipam_pb2.Allocation) -> bool:
    return a.release_policy in FIXED_POLICIES


def owner_key(namespace: str, kind: str, workload: str, pod: str) -> str:
    """The key of a fixed owner: namespace/kind/workload/pod."""
    return f"{namespace}/{kind}/{workload}/{pod}"


def allocation_owner_key(a: ipam_pb2.Allocation) -> str:
    o = a.owner
    return owner_key(o.namespace, o.workload_kind, o.workload_name, o.pod_name)


class IPStorage(Protocol):
    """Pools, bindings and allocations, with CAS mutations (see the module docstring)."""

    # -- pools --------------------------------------------------------------------------------
    async def create_pool(self, pool: ipam_pb2.Pool, *, pool_set_version: int) -> PoolEntry | Lost:
        """Store a new pool if the set of pools is still at `pool_set_version`
        (Lost.POOL_SET otherwise). Raises PoolExists."""
        ...

    async def pool_set(self) -> PoolSet:
        """Every pool, read no earlier than the version returned with them."""
        ...

    async def get_pool(self, name: str) -> PoolEntry | None: ...

    async def list_pools(self) -> list[PoolEntry]: ...

    async def update_pool(self, entry: PoolEntry, pool: ipam_pb2.Pool, *, deleting: bool) -> PoolEntry | None:
        """Replace the pool's definition and `deleting` flag if the pool is still at
        entry.version; None if it changed."""
        ...

    async def delete_pool(self, entry: PoolEntry) -> bool:
        """Remove the pool and its blocks if it is still at entry.version."""
        ...

    async def has_allocations(self, pool: str) -> bool: ...

    # -- bindings -----------------------------------------------------------------------------
    async def put_binding(self, binding: ipam_pb2.Binding) -> None: ...

    async def get_binding(self, namespace: str, kind: str, name: str) -> ipam_pb2.Binding | None: ...

    async def list_bindings(self, namespace: str = "") -> list[ipam_pb2.Binding]: ...

    async def delete_binding(self, namespace: str, kind: str, name: str) -> bool: ...

    async def namespace_bindings(self, namespace: str) -> NamespaceBindings:
        """The namespace's bindings with the version of the set, read before them."""
        ...

    # -- blocks and allocations ---------------------------------------------------------------
    async def blocks(self, pool: str) -> list[Block]:
        """Every written block of the pool (absent blocks are empty)."""
        ...

    async def block(self, pool: str, index: int) -> Block: ...

    async def reserve(
        self,
        pool_version: int,
        block: Block,
        allocation: ipam_pb2.Allocation,
        *,
        bindings: NamespaceBindings | None = None,
    ) -> Stored | Lost:
        """Write `block` (its new state; block.version is the expected one) and the allocation
        with its indexes, if the pool is at pool_version, the interface and fixed owner
        are free and `bindings`' namespace is still at its version (Lost.BINDINGS). The stored
        version is also the block's new version."""
        ...

    async def replace(
        self, current: Stored, allocation: ipam_pb2.Allocation, *, bindings: NamespaceBindings | None = None
    ) -> Stored | Lost:
        """Rewrite an allocation (same pool and address) if it is still at current.version, its
        new interface and owner are not someone else's and `bindings`' namespace is still at
        its version."""
        ...

    async def release(self, current: Stored, block: Block) -> Lost | int:
        """Remove an allocation and write `block` (its bit cleared), both compared; returns
        the block's new version."""
        ...

    async def by_attachment(self, container_id: str, ifname: str) -> Stored | None: ...

    async def by_owner(self, key: str) -> Stored | None: ...

    async def by_address(self, pool: str, ip: str) -> Stored | None: ...

    async def by_node(self, node: str) -> list[Stored]:
        """The allocations attached to a container on the node."""
        ...

    async def count_by_node(self, node: str) -> int:
        """How many addresses the node holds, without reading them: those `by_node` returns,
        and the fixed ones RETAINED since their last container was on the node (their `node`),
        until another node's container takes one over or it is released. The node rule's limit
        asks on every new address of a node's caller."""
        ...

    async def by_workload(self, namespace: str, kind: str, name: str) -> list[Stored]:
        """The fixed allocations of a workload."""
        ...

    async def allocations(self, pool: str, after: str, limit: int) -> tuple[list[Stored], str]:
        """Allocations in (pool, address) order after the cursor `after` ("" first), of one
        pool or all (pool ""); returns the page and the cursor of the next one ("" at the
        end)."""
        ...

    # -- the workload watcher's resume points (tke.internal.ipamd.kube_watcher) ------------------
    async def watch_cursor(self, name: str) -> str:
        """The value last put under `name`; "" when none was."""
        ...

    async def put_watch_cursor(self, name: str, value: str) -> None:
        """Keep `value` under `name` (last writer wins)."""
        ...

    async def close(self) -> None: ...
