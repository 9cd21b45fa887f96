"""An informer: list then watch one kind through the apiserver, keep a local cache, and tell
handlers what changed.

- The first list (all pages at one revision) fills the cache; the watch starts from that
  list's resource_version, so nothing between the two is missed.
- A broken stream (apiserver restart, network, RESOURCE_EXHAUSTED for a slow client) is
  resumed from the last resource_version seen, events or bookmarks: nothing is replayed twice
  and nothing is skipped.
- OUT_OF_RANGE (the revision was compacted) means changes were lost: list again, replace the
  cache, and report the differences (deleted objects as DELETED).
- Every `resync` seconds every cached object is handed to the handlers again (RESYNC), so a
  controller revisits objects even when nothing changes (health checks, missed wake-ups).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Callable
from typing import Generic, TypeVar

import grpc

from tke.internal.controller.cache import Cache, IndexFunc, object_key
from tke.internal.controller.client import ResourceClient, code_of
from tke.internal.meta.resource import Resource
from tke.meta.v1 import meta_pb2

R = TypeVar("R", bound=Resource)
log = logging.getLogger(__name__)


class Change(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    RESYNC = "RESYNC"


Handler = Callable[[Change, R], None]


class Informer(Generic[R]):
    def __init__(
        self,
        client: ResourceClient[R],
        *,
        resync: float = 60.0,
        indexers: dict[str, IndexFunc[R]] | None = None,
        retry_cap: float = 5.0,
    ) -> None:
        self.client = client
        self.cache: Cache[R] = Cache(indexers)
        self.resync = resync
        self.retry_cap = retry_cap
        self.handlers: list[Handler[R]] = []
        self.synced = asyncio.Event()
        self.resource_version = ""
        # Counters that tests and logs read.
        self.lists = 0
        self.resumes = 0
        self.events = 0

    def add_handler(self, handler: Handler[R]) -> None:
        self.handlers.append(handler)

    def _notify(self, change: Change, obj: R) -> None:
        for handler in self.handlers:
            try:
                handler(change, obj)
            except Exception:  # a handler's bug must not stop the informer
                log.exception("%s informer: handler failed", self.client.kind)

    async def run(self) -> None:
        """List and watch until cancelled."""
        resync = asyncio.create_task(self._resync_loop()) if self.resync > 0 else None
        delay = 0.1
        try:
            while True:
                seen = self.events
                try:
                    if not self.resource_version:
                        await self._relist()
                    await self._watch()
                    delay = 0.1  # the stream ended cleanly (server stopping): resume at once
                except grpc.aio.AioRpcError as err:
                    if code_of(err) == grpc.StatusCode.OUT_OF_RANGE:
                        log.info("%s informer: %s; listing again", self.client.kind, err.details())
                        self.resource_version = ""
                        continue
                    log.warning(
                        "%s informer: %s: %s; resuming from %s in %.1fs",
                        self.client.kind, err.code().name, err.details(), self.resource_version or "a new list", delay,
                    )  # fmt: skip
                if self.events != seen:
                    delay = 0.1  # the stream worked for a while: this is a fresh failure
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.retry_cap)
                self.resumes += 1
        finally:
            if resync is not None:
                resync.cancel()

    async def _relist(self) -> None:
        fresh: dict[str, R] = {}
        token = ""
        while True:
            page = await self.client.list(token)
            for obj in page.items:
                fresh[object_key(obj)] = obj
            token = page.continue_token
            if not token:
                break
        self.lists += 1
        for key in list(self.cache.all_keys()):
            if key not in fresh:
                old = self.cache.remove(key)
                if old is not None:
                    self._notify(Change.DELETED, old)
        for obj in fresh.values():
            old = self.cache.put(obj)
            if old is None:
                self._notify(Change.ADDED, obj)
            elif old.metadata.resource_version != obj.metadata.resource_version:
                self._notify(Change.MODIFIED, obj)
        self.resource_version = page.resource_version
        self.synced.set()

    async def _watch(self) -> None:
        async for kind, obj in self.client.watch(self.resource_version):
            self.events += 1
            self.resource_version = obj.metadata.resource_version or self.resource_version
            if kind == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK:
                continue
            if kind == meta_pb2.WATCH_EVENT_TYPE_DELETED:
                self.cache.remove(object_key(obj))
                self._notify(Change.DELETED, obj)
                continue
            old = self.cache.put(obj)
            self._notify(Change.ADDED if old is None else Change.MODIFIED, obj)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            if self.synced.is_set():
                for obj in self.cache.items():
                    self._notify(Change.RESYNC, obj)
