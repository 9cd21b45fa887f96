"""Compaction of etcd's history, so that old revisions never fill etcd up.

etcd keeps every revision of every key until it is compacted. The apiserver compacts every
`interval` seconds (Kubernetes' kube-apiserver does the same, every 5 minutes), to the revision
it saw one interval earlier: a watch or a continue token up to one interval old still resumes;
older ones get OUT_OF_RANGE and list again.

Several apiservers share the work the way Kubernetes' do: a compare-and-swap on the version of
one key, COMPACT_KEY. Each interval every apiserver tries to bump that key from the version it
last saw; the one that succeeds compacts, the others learn the new version and the current
revision and wait for the next interval. So at most one apiserver compacts per interval, and
whoever compacts keeps at least one interval of history. A compaction that finds the history
already compacted further (by etcd's own auto-compaction, or an operator) is not an error.

Compaction only marks old revisions free; etcd reuses that space, but its database file only
shrinks with a defragmentation (docs: "Storage" in the README).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from aetcd import rpc

from tke.internal.metrics import ETCD_COMPACTIONS
from tke.internal.storage.etcd.connection import EtcdConnection
from tke.internal.storage.store import StorageError

log = logging.getLogger(__name__)

# The key Kubernetes' apiservers coordinate on: an apiserver of ours sharing an etcd with a
# kube-apiserver takes turns with it instead of compacting twice as often.
COMPACT_KEY = b"compact_rev_key"


class Compactor:
    def __init__(self, conn: EtcdConnection, interval: float) -> None:
        self.conn = conn
        self.interval = interval
        self.version = 0  # COMPACT_KEY's version as last seen
        self.revision = 0  # etcd's revision one interval ago: what the next compaction keeps
        self.compactions = 0  # compactions this process made (tests, logs)

    async def run(self) -> None:
        """Every `interval` seconds, one attempt (see the module docstring); until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.attempt()
            except (StorageError, grpc.aio.AioRpcError) as err:
                details = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
                log.warning("etcd compaction failed (%s); trying again in %.0fs", details, self.interval)

    async def attempt(self) -> bool:
        """Take this interval's turn if nobody else did; compact to the revision of the
        previous turn. True when this process compacted."""
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=COMPACT_KEY,
                    result=rpc.Compare.CompareResult.EQUAL,
                    target=rpc.Compare.CompareTarget.VERSION,
                    version=self.version,
                )
            ],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=COMPACT_KEY, value=str(self.revision).encode()))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=COMPACT_KEY))],
        )
        # Only the version matters: a lost answer is resolved by the next turn's compare.
        resp = await self.conn.call(self.conn.kv.Txn, request, idempotent=True)
        current = int(resp.header.revision)
        if not resp.succeeded:
            kvs = resp.responses[0].response_range.kvs
            self.version = int(kvs[0].version) if kvs else 0
            self.revision = current
            return False
        self.version += 1
        target, self.revision = self.revision, current
        if target == 0:
            return False  # the first turn only records where history starts
        try:
            await self.conn.call(
                self.conn.kv.Compact, rpc.CompactionRequest(revision=target, physical=False), idempotent=True
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.OUT_OF_RANGE:  # already compacted further: fine
                log.debug("etcd history before %d was already compacted", target)
                return False
            raise
        self.compactions += 1
        ETCD_COMPACTIONS.inc()
        log.info("compacted etcd history before revision %d (current %d)", target, current)
        return True
