"""In-memory IP storage: the fake of the contract for unit and property tests, and for a
single throw-away daemon. Each method runs without awaiting, so it is atomic in one event
loop; state is lost with the process."""

from __future__ import annotations

import itertools
from dataclasses import replace

from tke.internal.ipamd.allocator import Block
from tke.internal.ipamd.keys import address_key, indexes
from tke.internal.ipamd.storage import Lost, NamespaceBindings, PoolEntry, PoolExists, PoolSet, Stored
from tke.ipam.v1 import ipam_pb2


def _copy(a: ipam_pb2.Allocation) -> ipam_pb2.Allocation:
    c = ipam_pb2.Allocation()
    c.CopyFrom(a)
    return c


class MemoryIPStorage:
    def __init__(self, **_options: object) -> None:
        self._versions = itertools.count(1)
        self._pools: dict[str, PoolEntry] = {}
        self._pool_set_version = 0
        self._bindings: dict[tuple[str, str, str], ipam_pb2.Binding] = {}
        self._binding_versions: dict[str, int] = {}  # namespace -> version of its bindings
        self._blocks: dict[tuple[str, int], Block] = {}
        self._allocs: dict[tuple[str, str], Stored] = {}  # (pool, address_key)
        # index kind -> index key -> (pool, address_key)
        self._index: dict[str, dict[str, tuple[str, str]]] = {"attachment": {}, "node": {}, "owner": {}}
        self._cursors: dict[str, str] = {}

    async def close(self) -> None:
        return None

    # -- pools --------------------------------------------------------------------------------
    async def create_pool(self, pool: ipam_pb2.Pool, *, pool_set_version: int) -> PoolEntry | Lost:
        if pool.name in self._pools:
            raise PoolExists(pool.name)
        if pool_set_version != self._pool_set_version:
            return Lost.POOL_SET
        entry = PoolEntry(pool=pool, version=next(self._versions))
        self._pools[pool.name] = entry
        self._pool_set_version = entry.version
        return entry

    async def pool_set(self) -> PoolSet:
        return PoolSet(await self.list_pools(), self._pool_set_version)

    async def get_pool(self, name: str) -> PoolEntry | None:
        return self._pools.get(name)

    async def list_pools(self) -> list[PoolEntry]:
        return [self._pools[n] for n in sorted(self._pools)]

    async def update_pool(self, entry: PoolEntry, pool: ipam_pb2.Pool, *, deleting: bool) -> PoolEntry | None:
        current = self._pools.get(entry.pool.name)
        if current is None or current.version != entry.version:
            return None
        new = PoolEntry(pool=pool, deleting=deleting, version=next(self._versions))
        self._pools[entry.pool.name] = new
        return new

    async def delete_pool(self, entry: PoolEntry) -> bool:
        current = self._pools.get(entry.pool.name)
        if current is None or current.version != entry.version:
            return False
        del self._pools[entry.pool.name]
        for key in [k for k in self._blocks if k[0] == entry.pool.name]:
            del self._blocks[key]
        return True

    async def has_allocations(self, pool: str) -> bool:
        return any(k[0] == pool for k in self._allocs)

    # -- bindings -----------------------------------------------------------------------------
    async def put_binding(self, binding: ipam_pb2.Binding) -> None:
        w = binding.workload
        self._bindings[(w.namespace, w.kind, w.name)] = binding
        self._binding_versions[w.namespace] = next(self._versions)

    async def get_binding(self, namespace: str, kind: str, name: str) -> ipam_pb2.Binding | None:
        return self._bindings.get((namespace, kind, name))

    async def list_bindings(self, namespace: str = "") -> list[ipam_pb2.Binding]:
        return [self._bindings[k] for k in sorted(self._bindings) if not namespace or k[0] == namespace]

    async def delete_binding(self, namespace: str, kind: str, name: str) -> bool:
        if self._bindings.pop((namespace, kind, name), None) is None:
            return False
        self._binding_versions[namespace] = next(self._versions)
        return True

    async def namespace_bindings(self, namespace: str) -> NamespaceBindings:
        return NamespaceBindings(
            namespace, await self.list_bindings(namespace), self._binding_versions.get(namespace, 0)
        )

    def _bindings_changed(self, seen: NamespaceBindings | None) -> bool:
        return seen is not None and self._binding_versions.get(seen.namespace, 0) != seen.version

    # -- blocks and allocations ---------------------------------------------------------------
    async def blocks(self, pool: str) -> list[Block]:
        return [b for k, b in sorted(self._blocks.items()) if k[0] == pool]

    async def block(self, pool: str, index: int) -> Block:
        return self._blocks.get((pool, index)) or Block(pool=pool, index=index)

    def _block_version(self, pool: str, index: int) -> int:
        current = self._blocks.get((pool, index))
        return current.version if current else 0

    def _index_owner(self, kind: str, key: str) -> tuple[str, str] | None:
        return self._index[kind].get(key)

    def _unindex(self, a: ipam_pb2.Allocation) -> None:
        for kind, key in indexes(a).items():
            self._index[kind].pop(key, None)

    def _store(self, a: ipam_pb2.Allocation, version: int) -> Stored:
        ref = (a.pool, address_key(a.ip))
        stored = Stored(allocation=_copy(a), version=version)
        self._allocs[ref] = stored
        for kind, key in indexes(a).items():
            self._index[kind][key] = ref
        return stored

    async def reserve(
        self,
        pool_version: int,
        block: Block,
        allocation: ipam_pb2.Allocation,
        *,
        bindings: NamespaceBindings | None = None,
    ) -> Stored | Lost:
        entry = self._pools.get(allocation.pool)
        if entry is None or entry.version != pool_version:
            return Lost.POOL
        if self._bindings_changed(bindings):
            return Lost.BINDINGS
        if self._block_version(block.pool, block.index) != block.version:
            return Lost.BLOCK
        keys = indexes(allocation)
        if "attachment" in keys and self._index_owner("attachment", keys["attachment"]):
            return Lost.ATTACHMENT
        if "owner" in keys and self._index_owner("owner", keys["owner"]):
            return Lost.OWNER
        # One version for every record of the mutation, like an etcd revision.
        version = next(self._versions)
        self._blocks[(block.pool, block.index)] = replace(block, version=version)
        return self._store(allocation, version)

    async def replace(
        self, current: Stored, allocation: ipam_pb2.Allocation, *, bindings: NamespaceBindings | None = None
    ) -> Stored | Lost:
        ref = (current.allocation.pool, address_key(current.allocation.ip))
        now = self._allocs.get(ref)
        if now is None or now.version != current.version:
            return Lost.ALLOCATION
        if self._bindings_changed(bindings):
            return Lost.BINDINGS
        for kind, key in indexes(allocation).items():
            holder = self._index_owner(kind, key)
            if holder is not None and holder != ref:
                return Lost.ATTACHMENT if kind != "owner" else Lost.OWNER
        self._unindex(now.allocation)
        return self._store(allocation, next(self._versions))

    async def release(self, current: Stored, block: Block) -> Lost | int:
        ref = (current.allocation.pool, address_key(current.allocation.ip))
        now = self._allocs.get(ref)
        if now is None or now.version != current.version:
            return Lost.ALLOCATION
        if self._block_version(block.pool, block.index) != block.version:
            return Lost.BLOCK
        self._unindex(now.allocation)
        del self._allocs[ref]
        version = next(self._versions)
        self._blocks[(block.pool, block.index)] = replace(block, version=version)
        return version

    def _lookup(self, kind: str, key: str) -> Stored | None:
        ref = self._index[kind].get(key)
        return self._allocs.get(ref) if ref else None

    async def by_attachment(self, container_id: str, ifname: str) -> Stored | None:
        return self._lookup("attachment", f"{container_id}/{ifname}")

    async def by_owner(self, key: str) -> Stored | None:
        return self._lookup("owner", key)

    async def by_address(self, pool: str, ip: str) -> Stored | None:
        return self._allocs.get((pool, address_key(ip)))

    def _on_node(self, node: str) -> list[Stored]:
        """The node's index entries, attached and retained (keys.indexes)."""
        refs = [r for k, r in sorted(self._index["node"].items()) if k.startswith(node + "/")]
        return [self._allocs[r] for r in refs if r in self._allocs]

    async def by_node(self, node: str) -> list[Stored]:
        return [s for s in self._on_node(node) if s.allocation.container_id]

    async def count_by_node(self, node: str) -> int:
        return len(self._on_node(node))

    async def by_workload(self, namespace: str, kind: str, name: str) -> list[Stored]:
        prefix = f"{namespace}/{kind}/{name}/"
        refs = [r for k, r in sorted(self._index["owner"].items()) if k.startswith(prefix)]
        return [self._allocs[r] for r in refs if r in self._allocs]

    async def allocations(self, pool: str, after: str, limit: int) -> tuple[list[Stored], str]:
        # The same order as etcd's keys: "pool/address" compared as strings.
        keys = sorted((k for k in self._allocs if not pool or k[0] == pool), key=lambda k: f"{k[0]}/{k[1]}")
        keys = [k for k in keys if f"{k[0]}/{k[1]}" > after]
        page = keys[:limit]
        nxt = f"{page[-1][0]}/{page[-1][1]}" if len(keys) > limit else ""
        return [self._allocs[k] for k in page], nxt

    async def watch_cursor(self, name: str) -> str:
        return self._cursors.get(name, "")

    async def put_watch_cursor(self, name: str, value: str) -> None:
        self._cursors[name] = value
