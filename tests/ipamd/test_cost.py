"""Allocation cost does not grow with the pool's fill: on a /16, an Allocate makes the same
storage calls at 5% as at 95% full, whether the used addresses are spread out or packed at the
front. (Wall-clock latency at both fill levels is measured by `python -m bench.ipamd`.)"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from tests.support.memory_ip_storage import MemoryIPStorage
from tke.internal.ipamd.allocator import BLOCK_SIZE, Block
from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.pools import pool_layout
from tke.ipam.v1 import ipam_pb2
from tke.plugins.ip_providers.static import StaticProvider

from .conftest import Clock, allocate_request


class CountingStorage:
    """The in-memory storage, counting calls by method."""

    def __init__(self) -> None:
        self.inner = MemoryIPStorage()
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await attr(*args, **kwargs)

        return counted


async def filled_ipam(fill: float, spread: bool) -> tuple[IPAM, CountingStorage]:
    storage = CountingStorage()
    ipam = IPAM(storage, {"static": StaticProvider()}, cooldown=0, clock=Clock())
    pool = await ipam.create_pool(ipam_pb2.Pool(name="big", cidr="10.100.0.0/16"))
    layout = pool_layout(pool)
    entry = await storage.inner.get_pool("big")
    assert entry is not None
    rnd = random.Random(7)
    target = round(layout.size * fill)
    owned = set(rnd.sample(range(layout.size), target)) if spread else set(range(target))
    # Lay the fill down through the storage contract: one reserve per block whose bitmap holds
    # that block's share of the owned addresses (its allocation record stands for them all).
    by_block: dict[int, list[int]] = {}
    for offset in owned:
        by_block.setdefault(offset // BLOCK_SIZE, []).append(offset % BLOCK_SIZE)
    for index, bits in by_block.items():
        used = 0
        for bit in bits:
            used |= 1 << bit
        a = ipam_pb2.Allocation(pool="big", ip=layout.ip_at(index * BLOCK_SIZE + bits[0]))
        await storage.inner.reserve(entry.version, Block("big", index, used), a)
    # Warm up: the first allocation reads the pool's blocks once.
    await ipam.allocate(allocate_request("warm-up"))
    storage.calls.clear()
    return ipam, storage


async def calls_per_allocation(fill: float, spread: bool) -> Counter[str]:
    ipam, storage = await filled_ipam(fill, spread)
    for i in range(200):
        await ipam.allocate(allocate_request(f"p{i}", f"c{i}"))
    return storage.calls


@pytest.mark.parametrize("spread", [True, False], ids=["spread", "packed"])
async def test_storage_calls_per_allocation_do_not_depend_on_fill(spread: bool) -> None:
    low = await calls_per_allocation(0.05, spread)
    high = await calls_per_allocation(0.95, spread)
    # Per allocation: the workload's binding and the reserve; no block reads, no re-reads of
    # the pool (the pool list is re-read at most once a second).
    assert high["get_binding"] == high["reserve"] == 200, high
    assert set(high) <= {"get_binding", "reserve", "list_pools"}, high
    del low["list_pools"], high["list_pools"]
    assert low == high, (low, high)
