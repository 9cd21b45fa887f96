"""A replica's view of one pool's blocks, and the compare-and-swap loops that take and give back
its addresses.

Invariants:
- Every write of a block compares the version this replica last saw; the cache of block states
  is only a hint. A lost compare drops the cached block, which is read again before the retry.
- One writer per block per replica (an asyncio lock), so a replica's own requests never lose a
  compare to each other; only other replicas cause retries.
- Versions only grow, so a re-read never replaces a fresher cached block, and concurrent
  re-reads share one read.
- Taking an address costs one block: candidates rotate over the blocks believed to have a
  pickable address; the whole pool is re-read only when none seems left.
- A compare lost to another replica moves this replica's rotation to a random place of the
  pool, so replicas sharing a pool soon write different blocks and seldom lose to each other
  again (what Calico's block affinity gives each host, without records of it: the
  compare-and-swap, not the rotation, keeps an address single-owned). A replica alone keeps
  the order it always had.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from dataclasses import replace

from tke.internal.ipamd import errors
from tke.internal.ipamd.allocator import BLOCK_SIZE, Block, give_back, locate, pick, pickable, take
from tke.internal.ipamd.pools import pool_layout
from tke.internal.ipamd.storage import IPStorage, Lost, NamespaceBindings, PoolEntry, Stored
from tke.internal.rpc.errors import not_found
from tke.ipam.v1 import ipam_pb2

MakeAllocation = Callable[[str], ipam_pb2.Allocation]


class PoolBlocks:
    """What this replica knows of a pool: its definition, numbering and the last seen state of
    its blocks; and the loops that change them."""

    def __init__(self, storage: IPStorage, entry: PoolEntry, *, clock: Callable[[], float], attempts: int) -> None:
        self.storage = storage
        self.clock = clock
        self.attempts = attempts
        self._reset(entry)

    def _reset(self, entry: PoolEntry) -> None:
        self.entry = entry
        self.layout = pool_layout(entry.pool)
        self.blocks: dict[int, Block] = {}
        # Blocks believed to have a pickable address, in round-robin order (a dict keeps order).
        self.candidates: dict[int, None] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        # One full re-read at a time; `loads` counts them so waiters can tell one just happened.
        self.load_lock = asyncio.Lock()
        self.loads = 0

    @property
    def name(self) -> str:
        return self.entry.pool.name

    def lock(self, index: int) -> asyncio.Lock:
        return self.locks.setdefault(index, asyncio.Lock())

    async def reload(self) -> None:
        """Re-read the pool's definition (it was updated, or deleted and created again).
        Raises NOT_FOUND when it is gone."""
        entry = await self.storage.get_pool(self.name)
        if entry is None:
            raise not_found("pool", self.name, "")
        self.adopt(entry)

    def adopt(self, entry: PoolEntry) -> None:
        old = self.entry.pool
        if entry.pool.cidr != old.cidr or entry.pool.creation_timestamp != old.creation_timestamp:
            self._reset(entry)  # deleted and created again: nothing cached about the old one holds
        self.entry = entry

    async def refresh(self) -> None:
        """reload(), and FAILED_PRECONDITION (POOL_DELETING) while it is being deleted."""
        await self.reload()
        if self.entry.deleting:
            raise errors.pool_deleting(self.name)

    def _next_candidate(self, now: float) -> int | None:
        while self.candidates:
            index = next(iter(self.candidates))
            # Rotate, so concurrent requests spread over the blocks.
            del self.candidates[index]
            block = self.blocks.get(index)
            if block is None or pickable(block, self.layout.block_span(index), now):
                self.candidates[index] = None
                return index
        return None

    def _move_away(self) -> None:
        """Rotate the candidates to a random one: another replica is writing where we were."""
        if len(self.candidates) > 1:
            ahead = list(itertools.islice(self.candidates, random.randrange(len(self.candidates))))
            for index in ahead:
                del self.candidates[index]
                self.candidates[index] = None

    async def _load(self) -> None:
        """Re-read every block (first use, or when the pool looks exhausted)."""
        seen = self.loads
        async with self.load_lock:
            if self.loads != seen:
                return  # someone re-read while we waited: that read is ours too
            now = self.clock()
            stored = {b.index: b for b in await self.storage.blocks(self.name)}
            for i in range(self.layout.block_count):
                fresh, cached = stored.get(i), self.blocks.get(i)
                if fresh is not None and (cached is None or fresh.version > cached.version):
                    self.blocks[i] = fresh
                elif cached is None:
                    self.blocks[i] = Block(pool=self.name, index=i)
            for i, b in self.blocks.items():
                if pickable(b, self.layout.block_span(i), now):
                    self.candidates.setdefault(i, None)
            self.loads += 1

    async def _block(self, index: int) -> Block:
        block = self.blocks.get(index)
        if block is None:
            block = await self.storage.block(self.name, index)
            self.blocks[index] = block
        return block

    async def take_any(self, make: MakeAllocation, bindings: NamespaceBindings | None = None) -> Stored | Lost | None:
        """Take a free address: the stored allocation; Lost.ATTACHMENT/OWNER when the request's
        interface or owner got one meanwhile, Lost.BINDINGS when the `bindings` it was decided
        on changed; None when the pool is exhausted."""
        reloaded = False
        for _ in range(self.attempts):
            now = self.clock()
            index = self._next_candidate(now)
            if index is None:
                if reloaded:
                    return None
                await self._load()
                reloaded = True
                continue
            async with self.lock(index):
                block = await self._block(index)
                bit = pick(block, self.layout.block_span(index), now)
                if bit is None:
                    self.candidates.pop(index, None)
                    continue
                new_block = take(block, bit, now)
                outcome = await self.storage.reserve(
                    self.entry.version, new_block, make(self.layout.ip_at(index * BLOCK_SIZE + bit)), bindings=bindings
                )
                if isinstance(outcome, Stored):
                    self.blocks[index] = replace(new_block, version=outcome.version)
                    return outcome
                if outcome is Lost.BLOCK:
                    self.blocks.pop(index, None)  # another replica wrote it: read it again
                    self._move_away()
                    continue
            if outcome is Lost.POOL:
                await self.refresh()
                continue
            return outcome
        raise errors.contention()

    async def take_address(
        self, ip: str, make: MakeAllocation, bindings: NamespaceBindings | None = None
    ) -> Stored | Lost:
        """Take a specific address; FAILED_PRECONDITION when it is someone's or cooling down."""
        offset = self.layout.offset_of(ip)
        if offset is None:
            raise ValueError(f"{ip} is not an address of pool {self.name}")
        index, bit = locate(offset)
        for _ in range(self.attempts):
            now = self.clock()
            async with self.lock(index):
                block = await self._block(index)
                if block.owned(bit):
                    holder = await self.storage.by_address(self.name, ip)
                    if holder is None:
                        self.blocks.pop(index, None)  # the cache was stale: read it again
                        continue
                    raise errors.address_in_use(self.name, ip, errors.holder(holder.allocation))
                until = block.cooling.get(bit, 0.0)
                if until > now:
                    raise errors.address_cooling(self.name, ip, until - now)
                # An explicit pick keeps the rotation where it was.
                new_block = replace(take(block, bit, now), cursor=block.cursor)
                outcome = await self.storage.reserve(self.entry.version, new_block, make(ip), bindings=bindings)
                if isinstance(outcome, Stored):
                    self.blocks[index] = replace(new_block, version=outcome.version)
                    return outcome
                if outcome is Lost.BLOCK:
                    self.blocks.pop(index, None)
                    continue
            if outcome is Lost.POOL:
                await self.refresh()
                continue
            return outcome
        raise errors.contention()

    async def give_back(self, stored: Stored, cooldown: float) -> bool:
        """Remove an allocation and clear its bit, cooling down; False if it changed meanwhile."""
        offset = self.layout.offset_of(stored.allocation.ip)
        if offset is None:
            raise RuntimeError(f"allocation {stored.allocation.ip} is outside pool {self.name}")
        index, bit = locate(offset)
        for _ in range(self.attempts):
            async with self.lock(index):
                block = await self._block(index)
                new_block = give_back(block, bit, self.clock(), cooldown)
                outcome = await self.storage.release(stored, new_block)
                if outcome is Lost.ALLOCATION:
                    return False
                if isinstance(outcome, Lost):
                    self.blocks.pop(index, None)
                    continue
                if outcome == 0:
                    self.blocks.pop(index, None)  # applied, version unknown: read it next time
                else:
                    self.blocks[index] = replace(new_block, version=outcome)
                self.candidates.setdefault(index, None)
                return True
        raise errors.contention()
