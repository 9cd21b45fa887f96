"""Leader election in one process over real etcd: one of two electors works at a time; a
leader cut off from etcd stops its work and raises LostLeadership before its lease expires
and the other starts; a leader that returns resigns and the standby takes over at once."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.support.etcd import EtcdProcess
from tke.internal.controller.leader import LeaderElector, LostLeadership
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.store import Unavailable


class Partitioned:
    """The store as a leader cut off from etcd sees it: renewals and revokes fail."""

    def __init__(self, inner: EtcdStore) -> None:
        self.inner = inner
        self.cut = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def keep_alive(self, lease: int) -> int:
        if self.cut:
            raise Unavailable("partitioned")
        return await self.inner.keep_alive(lease)

    async def revoke(self, lease: int) -> None:
        if self.cut:
            raise Unavailable("partitioned")
        await self.inner.revoke(lease)


pytestmark = pytest.mark.timeout(60)


async def test_one_works_at_a_time_and_a_cut_off_leader_stops_before_its_lease_expires(
    store: EtcdStore, etcd_prefix: str
) -> None:
    key = f"{etcd_prefix}/leader"
    working: list[str] = []
    overlap = False
    partitioned = Partitioned(store)
    a = LeaderElector(partitioned, key, "a", ttl=3)  # type: ignore[arg-type]
    b = LeaderElector(store, key, "b", ttl=3)

    def work(name: str) -> object:
        async def run() -> None:
            nonlocal overlap
            overlap = overlap or bool(working)
            working.append(name)
            try:
                await asyncio.sleep(3600)
            finally:
                working.remove(name)

        return run

    task_a = asyncio.create_task(a.run(work("a")))  # type: ignore[arg-type]
    await asyncio.wait_for(a.leading.wait(), 10)
    task_b = asyncio.create_task(b.run(work("b")))  # type: ignore[arg-type]
    await asyncio.sleep(0.5)
    assert working == ["a"] and await b.holder() == "a"

    partitioned.cut = True
    loop = asyncio.get_running_loop()
    cut_at = loop.time()
    with pytest.raises(LostLeadership):
        await asyncio.wait_for(task_a, 10)
    stopped_after = loop.time() - cut_at
    assert working == []
    await asyncio.wait_for(b.leading.wait(), 10)
    took_over_after = loop.time() - cut_at
    assert working == ["b"] and not overlap
    assert stopped_after < 3 <= took_over_after + 0.5  # a stopped before its lease could expire
    task_b.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task_b
    assert await b.holder() is None  # b resigned: its key went with its lease


async def test_a_leader_whose_work_ends_resigns_and_the_standby_takes_over(store: EtcdStore, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/leader"
    done = asyncio.Event()
    a = LeaderElector(store, key, "a", ttl=10)
    b = LeaderElector(store, key, "b", ttl=10)

    async def short() -> None:
        await done.wait()

    async def long() -> None:
        await asyncio.sleep(3600)

    task_a = asyncio.create_task(a.run(short))
    await asyncio.wait_for(a.leading.wait(), 10)
    task_b = asyncio.create_task(b.run(long))
    await asyncio.sleep(0.3)
    done.set()
    await asyncio.wait_for(task_a, 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(b.leading.wait(), 5)
    assert loop.time() - started < 2  # far less than the 10 s TTL: a revoked, b watched
    task_b.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task_b


@pytest.mark.slow
async def test_a_leader_stops_working_within_the_ttl_when_etcd_hangs(tmp_path: Path) -> None:
    server = EtcdProcess(tmp_path / "etcd")
    server.start()
    store = EtcdStore(EtcdConfig(endpoints=[server.endpoint], request_timeout=1.0, retry_budget=2.0))
    try:
        working = asyncio.Event()
        stopped: list[float] = []
        loop = asyncio.get_running_loop()

        async def work() -> None:
            working.set()
            try:
                await asyncio.sleep(3600)
            finally:
                stopped.append(loop.time())

        leader = LeaderElector(store, "/hang/leader", "a", ttl=3)
        task = asyncio.create_task(leader.run(work))
        await asyncio.wait_for(working.wait(), 10)
        server.pause()  # SIGSTOP: etcd neither answers nor closes connections
        paused_at = loop.time()
        try:
            with pytest.raises(LostLeadership):
                await asyncio.wait_for(task, 10)
            # The work stopped before the lease could have expired anywhere (its resignation,
            # a revoke nobody answers, may take longer).
            assert stopped
            print(f"work stopped {stopped[0] - paused_at:.2f}s after etcd hung (lease TTL 3s)")
            assert stopped[0] - paused_at < 3
        finally:
            server.resume()
    finally:
        await store.close()
        server.stop()
