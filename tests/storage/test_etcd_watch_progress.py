"""A watch's progress notifications never claim a revision whose events are still to come.

etcd before 3.4.25 (Debian 12 ships 3.4.23) answers a requested progress notification at once
with its current revision, ahead of the history it has queued for a watch that started in the
past (etcd issue 15220). Whoever trusts such a notification skips the rest: the apiserver's
catch-up watches end when a notification says they reached the window. Real etcd: a watch
reads 2,500 revisions of history slowly, with progress asked for every 50 ms (etcd sends a watch
that starts in the past at most 1,000 revisions per 100 ms, so the requests meet it unsynced); and
an apiserver watch hub's catch-up (which asks for progress as often as the hub does) still
delivers every change to a slow client."""

from __future__ import annotations

import asyncio

from tke.internal.apiserver.watch import Hub
from tke.internal.storage.etcd import EtcdStore
from tke.internal.storage.store import Item, Progress

VALUE = b"x" * 1024


async def test_no_progress_overtakes_the_history_a_watch_still_has_to_send(store: EtcdStore, etcd_prefix: str) -> None:
    prefix = f"{etcd_prefix}/history/"
    start = await store.current_revision()
    for i in range(2500):
        await store.create(f"{prefix}{i:04d}", VALUE)
    head = await store.current_revision()

    delivered = start
    async with asyncio.timeout(60):
        async for message in store.watch(prefix, after_revision=start, progress_interval=0.05):
            if isinstance(message, Progress):
                assert message.revision <= delivered, (
                    f"progress {message.revision} while the last event delivered is {delivered} of {head}"
                )
            else:
                assert message.item.mod_revision == delivered + 1
                delivered = message.item.mod_revision
                await asyncio.sleep(0)  # a client that takes its changes one by one
                if delivered == head:
                    break
        # Once it has sent everything, the watch still learns how far etcd is (bookmarks, and
        # catch-ups over a quiet stretch, end on it).
        async for message in store.watch(prefix, after_revision=head, progress_interval=0.05):
            assert message == Progress(head)
            break


async def test_a_catch_up_longer_than_the_progress_interval_delivers_every_change(
    store: EtcdStore, etcd_prefix: str
) -> None:
    root = f"{etcd_prefix}/catchup/"
    hub: Hub[Item] = Hub(store, root, lambda item: item, window=3, progress_interval=0.05)
    await hub.start()
    try:
        start = await store.current_revision()
        for i in range(2500):
            await store.create(f"{root}a/{i:04d}", VALUE)
        head = await store.current_revision()
        assert not hub.covers(start)  # the watch below catches up from etcd's history

        delivered: list[int] = []
        async with asyncio.timeout(60):
            async for message in hub.subscribe(f"{root}a/", start):
                if isinstance(message, int):
                    if message >= head:
                        break
                    continue
                delivered += [change.revision for change in message]
                await asyncio.sleep(0)  # one by one: progress is asked for many times meanwhile
        assert delivered == list(range(start + 1, head + 1))
    finally:
        await hub.stop()
