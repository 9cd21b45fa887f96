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
    """The store as a leader sees it, with a switch to cut it off from etcd (renewals and
    revokes fail). It notes when the last successful grant or renewal was sent: etcd counts
    the lease's TTL from when it handled that request, so the lease cannot expire earlier
    than `renewed + ttl`, and cannot have expired before then either. Tests compare with
    that instant, not with when they cut the line, which is some unknown time after it."""

    def __init__(self, inner: EtcdStore) -> None:
        self.inner = inner
        self.cut = False
        self.renewed = 0.0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def grant(self, ttl: int) -> int:
        sent = asyncio.get_running_loop().time()
        lease = await self.inner.grant(ttl)
        self.renewed = sent
        return lease

    async def keep_alive(self, lease: int) -> int:
        if self.cut:
            raise Unavailable("partitioned")
        sent = asyncio.get_running_loop().time()
        ttl = await self.inner.keep_alive(lease)
        self.renewed = sent
        return ttl

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

    loop = asyncio.get_running_loop()
    started: dict[str, float] = {}
    stopped: dict[str, float] = {}

    def work(name: str) -> object:
        async def run() -> None:
            nonlocal overlap
            overlap = overlap or bool(working)
            working.append(name)
            started[name] = loop.time()
            try:
                await asyncio.sleep(3600)
            finally:
                working.remove(name)
                stopped[name] = loop.time()

        return run

    task_a = asyncio.create_task(a.run(work("a")))  # type: ignore[arg-type]
    await asyncio.wait_for(a.leading.wait(), 30)
    task_b = asyncio.create_task(b.run(work("b")))  # type: ignore[arg-type]
    await asyncio.sleep(0.5)  # b's chance to misbehave; it must stand by, however long it took to start
    assert working == ["a"] and await b.holder() == "a"

    partitioned.cut = True
    with pytest.raises(LostLeadership):
        await asyncio.wait_for(task_a, 30)
    assert working == []
    await asyncio.wait_for(b.leading.wait(), 30)
    assert working == ["b"] and not overlap
    expiry = partitioned.renewed + a.ttl  # the earliest instant etcd may expire a's lease
    assert stopped["a"] < expiry, "a worked on after its lease could have expired"
    assert started["b"] >= expiry, "b took over before a's lease expired"
    task_b.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task_b
    assert await b.holder() is None  # b resigned: its key went with its lease


async def test_a_leader_whose_work_ends_resigns_and_the_standby_takes_over(store: EtcdStore, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/leader"
    done = asyncio.Event()
    # A TTL far longer than any delay on a loaded machine: taking over in less than a third of
    # it can only come from the revoke and the watch, not from the lease running out.
    a = LeaderElector(store, key, "a", ttl=30)
    b = LeaderElector(store, key, "b", ttl=30)

    async def short() -> None:
        await done.wait()

    async def long() -> None:
        await asyncio.sleep(3600)

    task_a = asyncio.create_task(a.run(short))
    await asyncio.wait_for(a.leading.wait(), 30)
    task_b = asyncio.create_task(b.run(long))
    await asyncio.sleep(0.3)  # b campaigns and stands by (if it is slower, it finds the key gone)
    done.set()
    await asyncio.wait_for(task_a, 30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(b.leading.wait(), 30)
    assert loop.time() - started < a.ttl / 3  # a revoked its lease and b watched: no TTL wait
    task_b.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task_b


@pytest.mark.slow
async def test_a_leader_stops_working_within_the_ttl_when_etcd_hangs(tmp_path: Path) -> None:
    server = EtcdProcess(tmp_path / "etcd")
    server.start()
    store = Partitioned(EtcdStore(EtcdConfig(endpoints=[server.endpoint], request_timeout=1.0, retry_budget=2.0)))
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

        leader = LeaderElector(store, "/hang/leader", "a", ttl=3)  # type: ignore[arg-type]
        task = asyncio.create_task(leader.run(work))
        await asyncio.wait_for(working.wait(), 30)
        server.pause()  # SIGSTOP: etcd neither answers nor closes connections
        try:
            with pytest.raises(LostLeadership):
                await asyncio.wait_for(task, 30)
            # The work stopped before the lease could have expired anywhere (its resignation,
            # a revoke nobody answers, may take longer).
            assert stopped
            assert stopped[0] < store.renewed + leader.ttl
        finally:
            server.resume()
    finally:
        await store.inner.close()
        server.stop()
