"""IP storage over etcd (the default): every mutation is one etcd transaction that compares
each record it touches.

Keys under `<prefix>/ipam/`:
  pools/<name>                          {"deleting": bool, "pool": base64 Pool}
  poolset                               the name of the last pool created; its mod_revision is
                                        the version of the set of pools (compared by creates)
  blocks/<pool>/<index:06d>             {"u": bitmap hex, "c": {bit: until}, "n": cursor}
  ips/<pool>/<address as 8 hex digits>  Allocation
  idx/attachment/<container>/<ifname>   Allocation (a copy)
  idx/node/<node>/<container>/<ifname>  Allocation (a copy)
  idx/node/<node>/~retained/<pool>/<address as 8 hex digits>
                                        Allocation (a copy): a fixed address retained since its
                                        last container on <node>, counted as the node's
  idx/owner/<ns>/<kind>/<workload>/<pod> Allocation (a copy)
  bindings/<ns>/<kind>/<name>           Binding
  cursors/<name>                        the workload watcher's resource version of one watch
  bindingsets/<ns>                      the last binding of the namespace put or deleted; its
                                        mod_revision is the version of the namespace's bindings
                                        (written with every put and delete of one of them,
                                        compared by the reserves and replaces decided on them)

Every write of an allocation rewrites all its index entries in the same transaction, so an index
entry always equals its allocation and has the same mod_revision (the allocation's version):
a lookup by container, node or owner is one read.

A transaction interrupted by a broken connection may or may not have been applied; it is
resolved by reading back the key it was about (tke.internal.storage.interrupted: our exact bytes
there, or the key gone for a release: applied), never retried blind.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from aetcd import rpc

from tke.internal.ipamd.allocator import Block
from tke.internal.ipamd.keys import address_key, attachment_key, indexes
from tke.internal.ipamd.storage import (
    Lost,
    NamespaceBindings,
    PoolEntry,
    PoolExists,
    PoolSet,
    StorageUnavailable,
    Stored,
)
from tke.internal.storage.etcd.connection import EtcdConfig, EtcdConnection, EtcdTLS
from tke.internal.storage.etcd.store import prefix_end
from tke.internal.storage.interrupted import Outcome, Resolution, resolve
from tke.internal.storage.store import Unavailable
from tke.ipam.v1 import ipam_pb2
from tke.plugins.ip_storage.etcd_batch import TxnBatcher

_EQUAL = rpc.Compare.CompareResult.EQUAL
_CREATE = rpc.Compare.CompareTarget.CREATE
_MOD = rpc.Compare.CompareTarget.MOD


@dataclass(frozen=True)
class EtcdIPStorageConfig:
    """[storage.options] of ipamd.toml for the etcd IP storage."""

    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    prefix: str = "/tke"
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    request_timeout: float = 5.0
    retry_budget: float = 15.0
    # The uid of the cluster whose addresses these are (the platform's network add-on sets it).
    # The prefix is named after the cluster's tenant and name, which a deleted cluster leaves to
    # the next cluster of that name: an ipamd starting for another uid empties what an earlier
    # cluster left there (claim). Empty: not checked.
    cluster_uid: str = ""


def _absent(key: bytes) -> rpc.Compare:
    return rpc.Compare(key=key, result=_EQUAL, target=_CREATE, create_revision=0)


def _at(key: bytes, version: int) -> rpc.Compare:
    if version == 0:
        return _absent(key)
    return rpc.Compare(key=key, result=_EQUAL, target=_MOD, mod_revision=version)


def _put(key: bytes, value: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))


def _delete(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def _read(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def encode_block(b: Block) -> bytes:
    return json.dumps({"u": f"{b.used:x}", "c": {str(k): v for k, v in b.cooling.items()}, "n": b.cursor}).encode()


def decode_block(pool: str, index: int, raw: bytes, version: int) -> Block:
    d = json.loads(raw)
    cooling = {int(k): float(v) for k, v in d.get("c", {}).items()}
    return Block(pool=pool, index=index, used=int(d["u"], 16), cooling=cooling, cursor=int(d["n"]), version=version)


def _alloc(raw: bytes) -> ipam_pb2.Allocation:
    a = ipam_pb2.Allocation()
    a.ParseFromString(raw)
    return a


class EtcdIPStorage:
    """IPStorage over etcd; see the module docstring for the layout."""

    def __init__(self, config: EtcdIPStorageConfig | None = None, **options: object) -> None:
        if config is None:
            from tke.internal.config.loader import from_dict

            config = from_dict(EtcdIPStorageConfig, dict(options), "storage.options")
        tls = EtcdTLS(config.ca_file, config.cert_file, config.key_file) if config.ca_file else None
        self._conn = EtcdConnection(
            EtcdConfig(
                endpoints=list(config.endpoints),
                prefix=config.prefix,
                tls=tls,
                request_timeout=config.request_timeout,
                retry_budget=config.retry_budget,
            )
        )
        self._root = config.prefix.rstrip("/") + "/ipam/"
        # Beside the root, not under it: one transaction empties the root and writes the owner.
        self._owner_key = (config.prefix.rstrip("/") + "/ipam-owner").encode()
        self._cluster_uid = config.cluster_uid
        # Allocations and releases that wait behind others share an etcd call (etcd_batch).
        self._batcher = TxnBatcher(self._send_txn)

    async def close(self) -> None:
        await self._batcher.close()
        await self._conn.close()

    async def claim(self) -> str:
        """Make the storage this cluster's (config.cluster_uid): recorded when nobody claimed it
        (storage of this cluster from before the rule keeps its data), kept when it is this
        cluster's, and emptied when it holds an earlier cluster's (pools, bindings, fixed and
        attached addresses of a deleted cluster of the same name are not the new one's).
        Returns the uid found before ("" when none). Every ipamd of the cluster calls it at start;
        the owner's revision is compared, so two of them racing empty it at most once."""
        if not self._cluster_uid:
            return ""
        wanted = self._cluster_uid.encode()
        root = self._root.encode()
        for _ in range(10):
            kv = await self._get(self._owner_key)
            if kv is not None and kv.value == wanted:
                return self._cluster_uid
            if kv is None:
                compare, ops = [_absent(self._owner_key)], [_put(self._owner_key, wanted)]
            else:
                compare = [_at(self._owner_key, kv.mod_revision)]
                empty = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=root, range_end=prefix_end(root)))
                ops = [empty, _put(self._owner_key, wanted)]
            resp = await self._txn(rpc.TxnRequest(compare=compare, success=ops))
            if resp is not None and resp.succeeded:
                return kv.value.decode(errors="replace") if kv is not None else ""
            # Another ipamd claimed it first, or the answer was lost: read again.
        raise StorageUnavailable("etcd: the IP storage's owner keeps changing; retrying at the next start")

    # -- keys and raw calls -------------------------------------------------------------------
    def _k(self, *parts: str) -> bytes:
        return (self._root + "/".join(parts)).encode()

    def _block_key(self, pool: str, index: int) -> bytes:
        return self._k("blocks", pool, f"{index:06d}")

    def _ip_key(self, pool: str, ip: str) -> bytes:
        return self._k("ips", pool, address_key(ip))

    def _index_key(self, kind: str, key: str) -> bytes:
        return self._k("idx", kind, key)

    async def _range(
        self, key: bytes, end: bytes = b"", limit: int = 0, *, count_only: bool = False
    ) -> rpc.RangeResponse:
        request = rpc.RangeRequest(key=key, range_end=end, limit=limit, count_only=count_only)
        try:
            return await self._conn.call(self._conn.kv.Range, request, idempotent=True)
        except Unavailable as err:
            raise StorageUnavailable(str(err)) from None

    async def _get(self, key: bytes) -> rpc.KeyValue | None:
        resp = await self._range(key)
        return resp.kvs[0] if resp.kvs else None

    async def _prefix(self, key: bytes) -> list[rpc.KeyValue]:
        out: list[rpc.KeyValue] = []
        start, end = key, prefix_end(key)
        while True:
            resp = await self._range(start, end, limit=1000)
            out.extend(resp.kvs)
            if not resp.more:
                return out
            start = resp.kvs[-1].key + b"\0"

    async def _resolve(self, key: bytes, value: bytes | None, expected_version: int) -> Resolution[rpc.KeyValue]:
        """What became of an interrupted write of `value` (None: a delete) to `key`."""
        return await resolve(lambda: self._get(key), value=value, expected_revision=expected_version)

    async def _send_txn(self, request: rpc.TxnRequest) -> rpc.TxnResponse:
        return await self._conn.call(self._conn.kv.Txn, request, idempotent=False)

    async def _txn(self, request: rpc.TxnRequest, *, batched: bool = False) -> rpc.TxnResponse | None:
        """The transaction's answer, or None when its outcome is unknown (connection broke).
        `batched`: it may travel with others (the hot path: reserve and release)."""
        try:
            return await (self._batcher.txn(request) if batched else self._send_txn(request))
        except Unavailable as err:
            if err.ambiguous:
                return None
            raise StorageUnavailable(str(err)) from None

    # -- pools --------------------------------------------------------------------------------
    @staticmethod
    def _pool_value(pool: ipam_pb2.Pool, deleting: bool) -> bytes:
        return json.dumps({"deleting": deleting, "pool": base64.b64encode(pool.SerializeToString()).decode()}).encode()

    @staticmethod
    def _pool_entry(kv: rpc.KeyValue) -> PoolEntry:
        d = json.loads(kv.value)
        pool = ipam_pb2.Pool()
        pool.ParseFromString(base64.b64decode(d["pool"]))
        return PoolEntry(pool=pool, version=kv.mod_revision, deleting=bool(d["deleting"]))

    async def create_pool(self, pool: ipam_pb2.Pool, *, pool_set_version: int) -> PoolEntry | Lost:
        key, set_key = self._k("pools", pool.name), self._k("poolset")
        value = self._pool_value(pool, False)
        request = rpc.TxnRequest(
            compare=[_absent(key), _at(set_key, pool_set_version)],
            success=[_put(key, value), _put(set_key, pool.name.encode())],
            failure=[_read(key)],
        )
        resp = await self._txn(request)
        if resp is None:
            found = await self._resolve(key, value, 0)
            if found.outcome is Outcome.APPLIED:
                return self._pool_entry(found.current)
            if found.outcome is Outcome.OVERTAKEN:
                raise PoolExists(pool.name)
            raise StorageUnavailable("etcd: create pool interrupted")
        if not resp.succeeded:
            if resp.responses[0].response_range.kvs:
                raise PoolExists(pool.name)
            return Lost.POOL_SET
        return PoolEntry(pool=pool, version=resp.header.revision)

    async def pool_set(self) -> PoolSet:
        # The version first: a pool created after it was read changes it, so a create compared
        # against it fails even if the list below already shows that pool.
        kv = await self._get(self._k("poolset"))
        return PoolSet(await self.list_pools(), kv.mod_revision if kv else 0)

    async def get_pool(self, name: str) -> PoolEntry | None:
        kv = await self._get(self._k("pools", name))
        return self._pool_entry(kv) if kv else None

    async def list_pools(self) -> list[PoolEntry]:
        return [self._pool_entry(kv) for kv in await self._prefix(self._k("pools", ""))]

    async def update_pool(self, entry: PoolEntry, pool: ipam_pb2.Pool, *, deleting: bool) -> PoolEntry | None:
        key = self._k("pools", entry.pool.name)
        value = self._pool_value(pool, deleting)
        resp = await self._txn(rpc.TxnRequest(compare=[_at(key, entry.version)], success=[_put(key, value)]))
        if resp is None:
            found = await self._resolve(key, value, entry.version)
            return self._pool_entry(found.current) if found.outcome is Outcome.APPLIED else None
        if not resp.succeeded:
            return None
        return PoolEntry(pool=pool, deleting=deleting, version=resp.header.revision)

    async def delete_pool(self, entry: PoolEntry) -> bool:
        key = self._k("pools", entry.pool.name)
        blocks = self._k("blocks", entry.pool.name, "")
        resp = await self._txn(
            rpc.TxnRequest(
                compare=[_at(key, entry.version)],
                success=[
                    _delete(key),
                    rpc.RequestOp(
                        request_delete_range=rpc.DeleteRangeRequest(key=blocks, range_end=prefix_end(blocks))
                    ),
                ],
            )
        )
        if resp is None:
            return (await self._resolve(key, None, entry.version)).outcome is Outcome.APPLIED
        return bool(resp.succeeded)

    async def has_allocations(self, pool: str) -> bool:
        key = self._k("ips", pool, "")
        resp = await self._range(key, prefix_end(key), limit=1)
        return bool(resp.kvs)

    # -- bindings -----------------------------------------------------------------------------
    def _binding_set_key(self, namespace: str) -> bytes:
        return self._k("bindingsets", namespace)

    async def put_binding(self, binding: ipam_pb2.Binding) -> None:
        w = binding.workload
        key = self._k("bindings", w.namespace, w.kind, w.name)
        # A last-writer-wins put: a binding is configuration, replaced whole by its owner.
        mark = _put(self._binding_set_key(w.namespace), f"{w.kind}/{w.name}".encode())
        resp = await self._txn(rpc.TxnRequest(success=[_put(key, binding.SerializeToString()), mark]))
        if resp is None:
            raise StorageUnavailable("etcd: put binding interrupted; retry")

    async def get_binding(self, namespace: str, kind: str, name: str) -> ipam_pb2.Binding | None:
        kv = await self._get(self._k("bindings", namespace, kind, name))
        if kv is None:
            return None
        b = ipam_pb2.Binding()
        b.ParseFromString(kv.value)
        return b

    async def list_bindings(self, namespace: str = "") -> list[ipam_pb2.Binding]:
        prefix = self._k("bindings", namespace, "") if namespace else self._k("bindings", "")
        out = []
        for kv in await self._prefix(prefix):
            b = ipam_pb2.Binding()
            b.ParseFromString(kv.value)
            out.append(b)
        return out

    async def delete_binding(self, namespace: str, kind: str, name: str) -> bool:
        key = self._k("bindings", namespace, kind, name)
        mark = _put(self._binding_set_key(namespace), f"{kind}/{name}".encode())
        resp = await self._txn(rpc.TxnRequest(compare=[_absent(key)], failure=[_delete(key), mark]))
        if resp is None:
            return True
        return not resp.succeeded  # the compare "absent" failed: it existed and was deleted

    # -- the workload watcher's cursors --------------------------------------------------------
    async def watch_cursor(self, name: str) -> str:
        kv = await self._get(self._k("cursors", name))
        return kv.value.decode() if kv is not None else ""

    async def put_watch_cursor(self, name: str, value: str) -> None:
        # Last writer wins: any replica's cursor is a point up to which some replica handled
        # every event (see tke.internal.ipamd.kube_watcher).
        resp = await self._txn(rpc.TxnRequest(success=[_put(self._k("cursors", name), value.encode())]))
        if resp is None:
            raise StorageUnavailable("etcd: put watch cursor interrupted; retry")

    async def namespace_bindings(self, namespace: str) -> NamespaceBindings:
        # The version first: a change after it was read changes it, so a write compared
        # against it fails even if the list below already shows that change.
        kv = await self._get(self._binding_set_key(namespace))
        return NamespaceBindings(namespace, await self.list_bindings(namespace), kv.mod_revision if kv else 0)

    def _bindings_guard(self, seen: NamespaceBindings | None) -> tuple[list[rpc.Compare], list[rpc.RequestOp]]:
        """The compare that a write decided on `seen` carries, and the read that tells it failed."""
        if seen is None:
            return [], []
        key = self._binding_set_key(seen.namespace)
        return [_at(key, seen.version)], [_read(key)]

    @staticmethod
    def _bindings_lost(seen: NamespaceBindings | None, resp: rpc.TxnResponse) -> bool:
        """Whether a failed transaction's last read (the guard's) shows the bindings changed."""
        if seen is None:
            return False
        kvs = resp.responses[-1].response_range.kvs
        return (kvs[0].mod_revision if kvs else 0) != seen.version

    # -- blocks -------------------------------------------------------------------------------
    async def blocks(self, pool: str) -> list[Block]:
        out = []
        for kv in await self._prefix(self._k("blocks", pool, "")):
            index = int(kv.key.decode().rsplit("/", 1)[1])
            out.append(decode_block(pool, index, kv.value, kv.mod_revision))
        return out

    async def block(self, pool: str, index: int) -> Block:
        kv = await self._get(self._block_key(pool, index))
        if kv is None:
            return Block(pool=pool, index=index)
        return decode_block(pool, index, kv.value, kv.mod_revision)

    # -- allocations --------------------------------------------------------------------------
    def _index_ops(self, a: ipam_pb2.Allocation, value: bytes) -> list[rpc.RequestOp]:
        return [_put(self._index_key(kind, key), value) for kind, key in indexes(a).items()]

    async def _stored(self, a: ipam_pb2.Allocation, value: bytes, expected_version: int) -> Stored | None:
        """After an interrupted write of allocation `a`: is it stored?"""
        found = await self._resolve(self._ip_key(a.pool, a.ip), value, expected_version)
        if found.outcome is Outcome.APPLIED and found.current is not None:
            return Stored(allocation=a, version=found.current.mod_revision)
        return None

    async def reserve(
        self,
        pool_version: int,
        block: Block,
        allocation: ipam_pb2.Allocation,
        *,
        bindings: NamespaceBindings | None = None,
    ) -> Stored | Lost:
        a = allocation
        pool_key = self._k("pools", a.pool)
        block_key = self._block_key(block.pool, block.index)
        ip_key = self._ip_key(a.pool, a.ip)
        idx = indexes(a)
        att_key = self._index_key("attachment", idx["attachment"]) if "attachment" in idx else None
        owner_key = self._index_key("owner", idx["owner"]) if "owner" in idx else None
        compare = [_at(pool_key, pool_version), _at(block_key, block.version), _absent(ip_key)]
        compare += [_absent(k) for k in (att_key, owner_key) if k is not None]
        guard, guard_read = self._bindings_guard(bindings)
        value = a.SerializeToString()
        request = rpc.TxnRequest(
            compare=compare + guard,
            success=[_put(block_key, encode_block(block)), _put(ip_key, value), *self._index_ops(a, value)],
            failure=[_read(pool_key), _read(block_key)]
            + [_read(k) for k in (att_key, owner_key) if k is not None]
            + guard_read,
        )
        resp = await self._txn(request, batched=True)
        if resp is None:
            stored = await self._stored(a, value, 0)
            return stored if stored is not None else Lost.BLOCK
        if resp.succeeded:
            return Stored(allocation=a, version=resp.header.revision)
        pool_kvs = resp.responses[0].response_range.kvs
        if not pool_kvs or pool_kvs[0].mod_revision != pool_version:
            return Lost.POOL
        if self._bindings_lost(bindings, resp):
            return Lost.BINDINGS
        block_kvs = resp.responses[1].response_range.kvs
        if (block_kvs[0].mod_revision if block_kvs else 0) != block.version:
            return Lost.BLOCK
        i = 2
        if att_key is not None:
            if resp.responses[i].response_range.kvs:
                return Lost.ATTACHMENT
            i += 1
        if owner_key is not None and resp.responses[i].response_range.kvs:
            return Lost.OWNER
        return Lost.BLOCK  # the address key itself: a block that lies (repaired by a re-read)

    async def replace(
        self, current: Stored, allocation: ipam_pb2.Allocation, *, bindings: NamespaceBindings | None = None
    ) -> Stored | Lost:
        old, a = current.allocation, allocation
        ip_key = self._ip_key(a.pool, a.ip)
        old_idx, new_idx = indexes(old), indexes(a)
        compare = [_at(ip_key, current.version)]
        failure = [_read(ip_key)]
        added = [(kind, key) for kind, key in new_idx.items() if old_idx.get(kind) != key]
        for kind, key in added:
            compare.append(_absent(self._index_key(kind, key)))
            failure.append(_read(self._index_key(kind, key)))
        ops = [_delete(self._index_key(kind, key)) for kind, key in old_idx.items() if new_idx.get(kind) != key]
        value = a.SerializeToString()
        ops += [_put(ip_key, value), *self._index_ops(a, value)]
        guard, guard_read = self._bindings_guard(bindings)
        resp = await self._txn(rpc.TxnRequest(compare=compare + guard, success=ops, failure=failure + guard_read))
        if resp is None:
            stored = await self._stored(a, value, current.version)
            return stored if stored is not None else Lost.ALLOCATION
        if resp.succeeded:
            return Stored(allocation=a, version=resp.header.revision)
        kvs = resp.responses[0].response_range.kvs
        if not kvs or kvs[0].mod_revision != current.version:
            return Lost.ALLOCATION
        if self._bindings_lost(bindings, resp):
            return Lost.BINDINGS
        for (kind, _), op in zip(added, resp.responses[1 : 1 + len(added)], strict=True):
            if op.response_range.kvs:
                return Lost.OWNER if kind == "owner" else Lost.ATTACHMENT
        return Lost.ALLOCATION

    async def release(self, current: Stored, block: Block) -> Lost | int:
        a = current.allocation
        ip_key = self._ip_key(a.pool, a.ip)
        block_key = self._block_key(block.pool, block.index)
        ops = [_delete(ip_key), _put(block_key, encode_block(block))]
        ops += [_delete(self._index_key(kind, key)) for kind, key in indexes(a).items()]
        resp = await self._txn(
            rpc.TxnRequest(
                compare=[_at(ip_key, current.version), _at(block_key, block.version)],
                success=ops,
                failure=[_read(ip_key)],
            ),
            batched=True,
        )
        if resp is None:
            # Gone means freed (by us or by someone who won; either way not ours any more);
            # the block's version is then unknown: 0 makes the next write re-read it.
            freed = await self._resolve(ip_key, None, current.version)
            return 0 if freed.outcome is Outcome.APPLIED else Lost.BLOCK
        if resp.succeeded:
            return int(resp.header.revision)
        kvs = resp.responses[0].response_range.kvs
        if not kvs or kvs[0].mod_revision != current.version:
            return Lost.ALLOCATION
        return Lost.BLOCK

    async def _follow(self, kind: str, key: str) -> Stored | None:
        kv = await self._get(self._index_key(kind, key))
        if kv is None:
            return None
        return Stored(allocation=_alloc(kv.value), version=kv.mod_revision)

    async def by_attachment(self, container_id: str, ifname: str) -> Stored | None:
        found = await self._follow("attachment", attachment_key(container_id, ifname))
        if found and (found.allocation.container_id, found.allocation.ifname) == (container_id, ifname):
            return found
        return None

    async def by_owner(self, key: str) -> Stored | None:
        return await self._follow("owner", key)

    async def by_address(self, pool: str, ip: str) -> Stored | None:
        kv = await self._get(self._ip_key(pool, ip))
        return Stored(allocation=_alloc(kv.value), version=kv.mod_revision) if kv else None

    async def _refs(self, kind: str, prefix: str) -> list[Stored]:
        return [
            Stored(allocation=_alloc(kv.value), version=kv.mod_revision)
            for kv in await self._prefix(self._index_key(kind, prefix))
        ]

    async def by_node(self, node: str) -> list[Stored]:
        return [
            s for s in await self._refs("node", node + "/") if s.allocation.node == node and s.allocation.container_id
        ]

    async def count_by_node(self, node: str) -> int:
        # The node's index entries, attached and retained, counted by etcd: one read, whatever
        # the node holds.
        key = self._index_key("node", node + "/")
        return int((await self._range(key, prefix_end(key), count_only=True)).count)

    async def by_workload(self, namespace: str, kind: str, name: str) -> list[Stored]:
        return await self._refs("owner", f"{namespace}/{kind}/{name}/")

    async def allocations(self, pool: str, after: str, limit: int) -> tuple[list[Stored], str]:
        base = self._k("ips", "")
        prefix = self._k("ips", pool, "") if pool else base
        start = (base + after.encode() + b"\0") if after else prefix
        resp = await self._range(start, prefix_end(prefix), limit=limit)
        page = [Stored(allocation=_alloc(kv.value), version=kv.mod_revision) for kv in resp.kvs]
        nxt = resp.kvs[-1].key[len(base) :].decode() if resp.more and resp.kvs else ""
        return page, nxt
