"""The watch cache: every object of a kind in memory, kept by the kind's watch hub, so that Get and
List are answered without a call to etcd (Kubernetes' watch cache, with its consistent reads).

Invariants:
- A loaded cache holds exactly the kind's keys as etcd had them at `revision`: the hub loads
  them with one List at a revision, then applies every change of its etcd watch in order,
  before fanning it out (`Hub`, watch.py). `changed` is the revision of the last change applied
  (or of the load): the state is the same at every revision from `changed` to `revision`.
- A read is consistent, the answer etcd would give now: before answering, the reader learns
  etcd's current revision and, in the same read, the revision of each kind's last write
  (`RevisionProbe`: one Range of the last-write keys, which every reader who arrived before it
  was sent shares; every write of a kind touches its key in the same transaction, registry.py).
  When the kind's last write is one the hub has applied, nothing of the kind changed since, and
  the cache holds etcd's state at the current revision; when it is newer, the reader waits for
  the hub to apply it. A reader that would wait more than `fresh_within` seconds reads etcd
  instead: the cache never answers stale, and never makes a read fail that etcd would have
  answered. So the apiserver must be the only writer of its kinds' keys: a key written
  straight into etcd is seen once the watch brings it, not at once.
- A kind whose keys expire (events: a lease deletes them, touching nothing) has no last-write
  key; its cache vouches for the revisions its own changes reached, and for later ones from
  etcd progress notifications when they are trusted: before 3.4.25 and 3.5.8 a requested one
  can overtake the events it claims (etcd issue 15220; `progress_is_ordered`). Without them a
  read that needs more (the latest write was to another key) reads etcd.
- A change at or below a revision the cache already vouched for means what vouched was wrong
  (a notification that overtook it: notifications are off for good; or a write straight into
  etcd that touched nothing): an error in the log, and the cache's revision goes back to it.
- A read at an explicit revision (a continue token's) is answered from memory only when the
  state at that revision is the cache's (`changed <= revision <= revision`); otherwise etcd
  answers it (it keeps the history, or says Compacted).
- Memory: each object's stored bytes once (the etcd Item), a sorted index of the keys, and, for
  objects that were listed, their encoding as an item of a List response (`framed`), which
  makes a List a concatenation of bytes.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, cast

from tke.internal.metrics import WATCH_CACHE_OBJECTS, WATCH_CACHE_READS
from tke.internal.storage.store import Event, EventType, Item, NotFound, Page, Store

log = logging.getLogger(__name__)


def _past(prefix: str) -> str:
    """The smallest string after every string that starts with `prefix` (non-empty)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# Under the apiserver's prefix: one empty key per kind that every write of the kind touches.
LAST_WRITES = "last-write"


def last_write_key(prefix: str, plural: str) -> str:
    """The key whose mod_revision is the revision of the kind's last write."""
    return f"{prefix}/{LAST_WRITES}/{plural}"


@dataclass(frozen=True, slots=True)
class Now:
    """etcd's current revision, and the revision of each kind's last write (by last-write key;
    a kind never written since the keys exist is absent: 0)."""

    revision: int
    last_writes: dict[str, int]


class Reads(Protocol):
    """The reads of the Store contract, which the cache answers for its kind's keys."""

    async def get(self, key: str) -> Item: ...

    async def list(self, prefix: str, *, start: str = "", limit: int = 0, revision: int = 0) -> Page: ...


class RevisionProbe:
    """etcd's current revision and the kinds' last writes (`Now`, from one Range of the
    last-write keys under `prefix`), read once for every caller that asked before the read was
    sent.

    A caller arriving while a read is in flight waits for the next one (the one in flight may
    have been answered before the caller's own request arrived: a write it saw could be missing).
    So one Range serves every read that arrived during the previous one. When callers did arrive
    meanwhile (calls are concurrent), the next read lets others join first, `step` seconds at a
    time while each step brings someone, for at most `gather` seconds: a Range costs about as
    much CPU as a Get answered from memory, and under load the callers would otherwise share one
    only by a few; a lone caller never waits, and a pair waits one step."""

    def __init__(self, store: Store, prefix: str, gather: float = 0.004, step: float = 0.001) -> None:
        self.store = store
        self.last_writes = f"{prefix}/{LAST_WRITES}/"
        self.gather = gather
        self.step = step
        self._next: asyncio.Future[Now] | None = None  # the read the next callers share
        self._running: asyncio.Task[None] | None = None
        self._joined = 0  # callers so far: the gathering sees whether a step brought any

    async def current(self) -> Now:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if self._running is None or self._running.done():
                self._running = asyncio.create_task(self._run(), name="etcd revision probe")
        self._joined += 1
        return await asyncio.shield(self._next)

    async def _run(self) -> None:
        first = True
        while self._next is not None:
            if not first and self.gather:
                await self._gather()  # callers came during the last read
            first = False
            waiting, self._next = self._next, None
            try:
                page = await self.store.list(self.last_writes)
                waiting.set_result(Now(page.revision, {item.key: item.mod_revision for item in page.items}))
            except Exception as err:  # every waiter gets the error; the next probe tries again
                waiting.set_exception(err)
                waiting.exception()  # retrieved: a waiter that was cancelled must not log it

    async def _gather(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather
        while True:
            joined = self._joined
            await asyncio.sleep(self.step)
            if self._joined == joined or loop.time() >= deadline:
                return


class KindCache:
    """Every object of one kind (keys under `root`), for the reads of the Store contract."""

    def __init__(
        self,
        store: Store,
        root: str,
        probe: RevisionProbe,
        *,
        fresh_within: float = 3.0,
        frame: Callable[[Item], bytes] | None = None,
        progress_ordered: bool = False,
        last_write: str | None = None,
    ) -> None:
        """`last_write`: the key every write of the kind touches (None: the kind has none)."""
        self.store = store
        self.root = root
        self.last_write = last_write
        self.kind = root.rstrip("/").rsplit("/", 1)[-1]
        self.probe = probe
        self.fresh_within = fresh_within
        self._items: dict[str, Item] = {}
        self._keys: list[str] = []  # sorted: str order is etcd's byte order for UTF-8 keys
        self._framed: dict[str, bytes] = {}  # by key, for the current item of that key
        self._frame = frame
        self.loaded = False
        self.revision = 0  # the state is etcd's at this revision
        self.changed = 0  # ... and at every revision from this one on
        self._claimed = 0  # the highest revision a progress notification claimed
        self.progress_trusted = progress_ordered  # see the module docstring
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.request_progress: Callable[[], None] = lambda: None  # set by the hub
        self._from_cache = WATCH_CACHE_READS.labels(self.kind, "cache")
        self._from_etcd = WATCH_CACHE_READS.labels(self.kind, "etcd")
        self._objects = WATCH_CACHE_OBJECTS.labels(self.kind)

    def __len__(self) -> int:
        return len(self._items)

    # -- kept by the hub ------------------------------------------------------------------

    def load(self, items: Iterable[Item], revision: int) -> None:
        self._items = {item.key: item for item in items}
        self._keys = sorted(self._items)
        self._framed = {}
        self.changed = self._claimed = revision
        self.loaded = True
        self._objects.set(len(self._items))
        self._advance(revision)

    def unload(self) -> None:
        """The hub lost its watch's history: nothing here can be vouched for until it loads."""
        self.loaded = False
        self._items, self._keys, self._framed = {}, [], {}
        self._objects.set(0)

    def apply(self, event: Event) -> None:
        key, revision = event.item.key, event.item.mod_revision
        if revision <= self.revision and self.loaded:
            self._overtaken(revision)
        self._framed.pop(key, None)
        if event.type is EventType.DELETE:
            if self._items.pop(key, None) is not None:
                del self._keys[bisect.bisect_left(self._keys, key)]
        else:
            if key not in self._items:
                bisect.insort(self._keys, key)
            self._items[key] = event.item
        self._objects.set(len(self._items))
        self.changed = revision
        self._advance(revision)

    def _overtaken(self, revision: int) -> None:
        """A change at `revision` comes after the cache vouched for that revision: what vouched
        was wrong. The cache stops vouching beyond its changes until this one is applied."""
        if self.progress_trusted and revision <= self._claimed:
            self.progress_trusted = False
            log.error(
                "etcd sent a progress notification for revision %d before the change at %d of %s: consistent "
                "reads from the watch cache now rely on changes only (upgrade etcd to 3.4.25 or 3.5.8 or later)",
                self._claimed,
                revision,
                self.root,
            )
        else:
            log.error(
                "the change at %d of %s did not touch %s, so reads up to revision %d may have missed it: "
                "only the apiserver may write under its prefix",
                revision,
                self.root,
                self.last_write,
                self.revision,
            )
        self.revision = revision

    def progress(self, revision: int) -> None:
        if self.progress_trusted:
            self._claimed = max(self._claimed, revision)
            self._advance(revision)

    def _advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision) if self.loaded else revision
        if self._waiters:
            waiting = [(r, f) for r, f in self._waiters if r > self.revision]
            for r, f in self._waiters:
                if r <= self.revision and not f.done():
                    f.set_result(None)
            self._waiters = waiting

    # -- consistent reads -----------------------------------------------------------------

    async def reads(self) -> Reads:
        """What to read from for an answer etcd would give now: this cache once it holds etcd's
        state at the current revision, else etcd itself."""
        if self.loaded:
            now = await self.probe.current()
            if self.loaded and await self._holds_now(now):
                self._from_cache.inc()
                return self
        self._from_etcd.inc()
        return self.store

    async def _holds_now(self, now: Now) -> bool:
        if self.revision >= now.revision:
            return True
        if self.last_write is not None:
            # Nothing of the kind was written after `last` up to now.revision: once the hub has
            # applied `last`, the state is etcd's at now.revision.
            last = now.last_writes.get(self.last_write, 0)
            if self.revision < last and not await self._wait_for(last):
                return False
            if not self.loaded:
                return False
            self._advance(now.revision)
            return True
        if not self.progress_trusted:
            return False
        self.request_progress()
        return await self._wait_for(now.revision) and self.loaded and self.progress_trusted

    async def _wait_for(self, target: int) -> bool:
        """Wait until the cache has reached `target`, at most `fresh_within` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        try:
            async with asyncio.timeout(self.fresh_within):
                await waiter
        except TimeoutError:
            log.debug("watch cache of %s did not reach revision %d in %.1fs: reading etcd", self.root, target,
                      self.fresh_within)  # fmt: skip
            return False
        finally:
            if not waiter.done():
                waiter.cancel()
        return True

    # -- the Store's reads, for this kind's keys --------------------------------------------

    async def get(self, key: str) -> Item:
        item = self._items.get(key)
        if item is None:
            raise NotFound(key)
        return item

    def holds(self, revision: int) -> bool:
        """Whether the cache's state is etcd's at `revision` (0: the latest the cache vouched for)."""
        return not revision or (self.loaded and self.changed <= revision <= self.revision)

    async def list(self, prefix: str, *, start: str = "", limit: int = 0, revision: int = 0) -> Page:
        if not self.holds(revision):
            return await self.store.list(prefix, start=start, limit=limit, revision=revision)
        keys = self._keys
        i = bisect.bisect_left(keys, max(start, prefix))
        end = len(keys) if not limit else min(len(keys), i + limit)
        items: list[Item] = []
        while i < end and keys[i].startswith(prefix):
            items.append(self._items[keys[i]])
            i += 1
        more = i < len(keys) and keys[i].startswith(prefix)
        return Page(items=items, revision=revision or self.revision, more=more)

    def framed_page(
        self, prefix: str, start: str, limit: int, max_bytes: int
    ) -> tuple[builtins.list[bytes], str, bool]:
        """A List page straight from memory, every object selected: the framed items (see
        `framed`) of up to `limit` keys under `prefix` from `start`, stopping once they hold
        `max_bytes`; the last key, and whether keys under the prefix follow."""
        keys, framed = self._keys, self._framed
        first = bisect.bisect_left(keys, max(start, prefix))
        after = bisect.bisect_left(keys, _past(prefix), first)  # the first key after the prefix's
        names = keys[first : min(after, first + limit)]
        found = list(map(framed.get, names))  # the loops in C: a page of 1,000 in about 0.1 ms
        out: builtins.list[bytes] = (
            cast(builtins.list[bytes], found)
            if None not in found
            else [one if one is not None else self._remember(name) for name, one in zip(names, found, strict=True)]
        )
        if sum(map(len, out)) >= max_bytes:
            size = 0
            for n, one in enumerate(out):
                size += len(one)
                if size >= max_bytes:
                    out, names = out[: n + 1], names[: n + 1]
                    break
        more = first + len(names) < after
        return out, names[-1] if names else "", more

    def _remember(self, key: str) -> bytes:
        assert self._frame is not None
        one = self._framed[key] = self._frame(self._items[key])
        return one

    def framed(self, item: Item) -> bytes:
        """`item` encoded as one element of a List response (see Registry.framed), kept while
        the item is the current one of its key."""
        assert self._frame is not None
        if self._items.get(item.key) is not item:
            return self._frame(item)
        out = self._framed.get(item.key)
        if out is None:
            out = self._framed[item.key] = self._frame(item)
        return out
