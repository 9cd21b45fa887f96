"""The revision probe that consistent reads from the watch cache share: a caller never gets a
read sent before it asked, concurrent callers share reads, a lone caller does not wait, and the
gathering of callers for the next read is bounded."""

from __future__ import annotations

import asyncio

from tests.support.memory_store import MemoryStore
from tests.support.waiting import bounded
from tke.internal.apiserver.cache import RevisionProbe, last_write_key
from tke.internal.storage.store import Page

PREFIX = "/p"
MARK = last_write_key(PREFIX, "clusters")
FOREVER = 3600.0


class GatedStore(MemoryStore):
    """A store that counts its reads and can hold one, after it was answered, until the test
    lets it go (the answer is the store's at the moment it was read)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.read_started = asyncio.Event()
        self.gate: asyncio.Event | None = None  # the next read waits for it

    async def list(self, prefix: str, *, start: str = "", limit: int = 0, revision: int = 0) -> Page:
        page = await super().list(prefix, start=start, limit=limit, revision=revision)
        self.reads += 1
        gate, self.gate = self.gate, None
        self.read_started.set()
        if gate is not None:
            await gate.wait()
        return page


async def test_callers_during_a_read_share_the_next_one_which_sees_what_they_saw() -> None:
    store = GatedStore()
    store.gate = gate = asyncio.Event()
    probe = RevisionProbe(store, PREFIX, gather=FOREVER, step=0.01)
    async with bounded(20, "the probe's reads"):
        first = asyncio.create_task(probe.current())
        await store.read_started.wait()
        # A write is acknowledged after the first read was answered: only a later read shows it.
        written = await store.create("/p/clusters/a", b"{}", touches=[MARK])
        late = [asyncio.create_task(probe.current()) for _ in range(5)]
        gate.set()
        now = await first
        answers = await asyncio.gather(*late)
    assert MARK not in now.last_writes and now.revision < written.mod_revision
    assert all(a is answers[0] for a in answers), "the callers that came during a read did not share the next"
    assert answers[0].last_writes[MARK] == written.mod_revision
    assert store.reads == 2


async def test_a_lone_caller_does_not_wait_for_others() -> None:
    store = GatedStore()
    probe = RevisionProbe(store, PREFIX, gather=FOREVER, step=FOREVER)
    async with bounded(20, "lone callers"):
        for expected in (1, 2, 3):
            await probe.current()
            assert store.reads == expected


async def test_the_gathering_ends_when_a_step_brings_nobody() -> None:
    """One caller came during the read: the next read waits one step, not `gather`."""
    store = GatedStore()
    store.gate = gate = asyncio.Event()
    probe = RevisionProbe(store, PREFIX, gather=FOREVER, step=0.01)
    async with bounded(20, "a read after one step"):
        first = asyncio.create_task(probe.current())
        await store.read_started.wait()
        second = asyncio.create_task(probe.current())
        gate.set()
        await asyncio.gather(first, second)
    assert store.reads == 2


async def test_the_gathering_ends_at_its_bound_while_callers_keep_coming() -> None:
    store = GatedStore()
    store.gate = gate = asyncio.Event()
    probe = RevisionProbe(store, PREFIX, gather=0.2, step=0.01)
    callers: list[asyncio.Task[object]] = []

    async def keep_coming() -> None:
        while True:
            callers.append(asyncio.create_task(probe.current()))
            await asyncio.sleep(0.002)

    async with bounded(20, "a read while callers keep coming"):
        first = asyncio.create_task(probe.current())
        await store.read_started.wait()
        second = asyncio.create_task(probe.current())
        feeder = asyncio.create_task(keep_coming())
        gate.set()
        await asyncio.gather(first, second)
        feeder.cancel()
        await asyncio.gather(*callers)
    # Each read gathered for about 0.2 s while callers came every 2 ms: far fewer reads than callers.
    assert store.reads < len(callers) / 10, (store.reads, len(callers))
