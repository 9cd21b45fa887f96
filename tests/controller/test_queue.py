"""The work queue and backoff: dedupe, one worker per key at a time, per-key exponential
backoff with a cap, delayed adds keeping the earliest."""

from __future__ import annotations

import asyncio
import itertools
import time

from tests.support.waiting import wait_for
from tke.internal.controller.backoff import Backoff
from tke.internal.controller.queue import WorkQueue
from tke.internal.controller.workers import run_workers


def test_backoff_doubles_per_key_up_to_the_cap_and_forget_resets() -> None:
    b = Backoff(base=0.5, cap=4.0)
    assert [b.next_delay("a") for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.next_delay("b") == 0.5  # keys are independent
    b.forget("a")
    assert b.next_delay("a") == 0.5


async def test_a_key_is_queued_once_however_often_it_is_added() -> None:
    q = WorkQueue()
    for _ in range(100):
        q.add("t/a")
    q.add("t/b")
    assert len(q) == 2
    assert await q.get() == "t/a"
    assert await q.get() == "t/b"
    assert len(q) == 0


async def test_a_key_added_while_processing_waits_for_done_then_comes_back_once() -> None:
    q = WorkQueue()
    q.add("k")
    key = await q.get()
    q.add("k")
    q.add("k")
    assert len(q) == 0  # not handed out again while a worker holds it
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "k"


async def test_workers_never_hold_one_key_at_once_and_every_add_is_seen() -> None:
    q = WorkQueue()
    running: set[str] = set()
    overlaps = 0
    seen: dict[str, int] = {}

    async def reconcile(key: str) -> float | None:
        nonlocal overlaps
        if key in running:
            overlaps += 1
        running.add(key)
        await asyncio.sleep(0.01)
        running.discard(key)
        seen[key] = seen.get(key, 0) + 1
        return None

    workers = asyncio.create_task(run_workers("test", q, reconcile, 8))
    for round_ in range(20):
        for k in range(5):
            q.add(f"k{k}")
        await asyncio.sleep(0.003 * (round_ % 3))
    await wait_for(lambda: not q.processing and len(q) == 0, what="the queue draining")
    await q.shutdown()
    await asyncio.wait_for(workers, 30)
    assert overlaps == 0
    assert set(seen) == {f"k{k}" for k in range(5)}
    assert all(1 <= n <= 20 for n in seen.values())  # deduped, but the last add always ran


class RetryLog(WorkQueue):
    """A work queue that notes the backoff delay of every retry."""

    def __init__(self, backoff: Backoff) -> None:
        super().__init__(backoff)
        self.delays: list[float] = []

    def retry(self, key: str) -> float:
        delay = super().retry(key)
        self.delays.append(delay)
        return delay


async def test_failures_are_retried_with_growing_backoff_and_success_forgets() -> None:
    q = RetryLog(Backoff(base=0.05, cap=0.2))
    times: list[float] = []
    finished = asyncio.Event()

    async def reconcile(key: str) -> float | None:
        times.append(time.monotonic())
        if len(times) < 5:
            raise RuntimeError("not yet")
        finished.set()
        return None

    workers = asyncio.create_task(run_workers("test", q, reconcile, 2))
    q.add("k")
    await asyncio.wait_for(finished.wait(), 30)
    await q.shutdown()
    await asyncio.wait_for(workers, 30)
    assert q.delays == [0.05, 0.1, 0.2, 0.2]  # growing, then capped
    # Each retry waited its delay (a loaded machine may make it wait longer, never shorter).
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= delay - 0.001 for gap, delay in zip(gaps, q.delays, strict=True)), gaps
    assert q.backoff.failures("k") == 0


async def test_add_after_keeps_the_earliest_deadline() -> None:
    q = WorkQueue()
    q.add_after("k", 5.0)
    q.add_after("k", 0.05)
    q.add_after("k", 3.0)
    started = time.monotonic()
    assert await asyncio.wait_for(q.get(), 30) == "k"
    assert time.monotonic() - started < 3.0  # the 0.05 s deadline won: not the later 3 s nor 5 s
    await q.shutdown()


async def test_workers_stop_even_when_a_reconcile_swallows_their_cancellation() -> None:
    queue = WorkQueue()
    started = asyncio.Event()

    async def swallowing(key: str) -> float | None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:  # the bug this guards against: caught, not raised again
            return None
        return None

    queue.add("a")
    workers = asyncio.create_task(run_workers("swallow", queue, swallowing, 2))
    await asyncio.wait_for(started.wait(), 5)
    workers.cancel()
    done, _ = await asyncio.wait({workers}, timeout=5)
    assert done, "the workers did not stop after their cancellation"


async def test_one_tenant_gets_at_most_its_share_of_workers_and_others_pass_its_keys() -> None:
    q = WorkQueue(tenant_share=2)
    for i in range(4):
        q.add(f"greedy/{i}")
    q.add("other/a")
    taken = [await q.get() for _ in range(3)]
    assert taken == ["greedy/0", "other/a", "greedy/1"]  # greedy/2 waits: its tenant holds 2
    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not waiting.done() and len(q) == 2
    q.done("other/a")  # another tenant's slot: still not greedy's turn
    await asyncio.sleep(0)
    assert not waiting.done()
    q.done("greedy/0")
    assert await asyncio.wait_for(waiting, 5) == "greedy/2"  # in order, once a slot is free


async def test_tenants_take_turns_and_each_tenants_keys_keep_their_order() -> None:
    # One tenant with many queued keys (a platform restart queues every object) delays another
    # tenant's key by one key a turn, not by its whole backlog.
    q = WorkQueue()
    for i in range(1000):
        q.add(f"big/{i}")
    q.add("small/a")
    q.add("small/b")
    q.add("third/x")
    taken = [await q.get() for _ in range(7)]
    assert taken == ["big/0", "small/a", "third/x", "big/1", "small/b", "big/2", "big/3"]
    assert len(q) == 996
    # A tenant whose keys ran out and come again joins the turns at the back.
    q.add("small/c")
    assert [await q.get() for _ in range(2)] == ["big/4", "small/c"]
