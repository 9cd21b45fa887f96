"""Leader election through an etcd lease: of several tke-controller processes, one works.

- Campaign: grant a lease of `ttl` seconds and create the leader key bound to it, a CAS on
  the key's absence (create_revision == 0). Losing the CAS means someone leads: watch the key
  and try again when it is deleted (its holder revoked its lease, or the lease expired).
- Lead: keep the lease alive about every ttl/3. When renewal has not succeeded for
  `ttl - margin` seconds, or the lease is reported expired, leadership is lost: the work is
  cancelled before another process can have won the key, so no step ever runs in two
  processes at once (the margin covers clock rate differences and the cancel itself).
- Resign: revoke the lease; the key goes at once and a standby takes over without waiting
  for the TTL.
- Nothing etcd does ends the campaign: an error, a stall (SIGSTOP, a defragmentation), a
  refusal (NOSPACE) is logged and tried again a second later, for as long as it lasts. A
  process that lost its lease campaigns again (see manager.py) and leads again once etcd
  answers and the key is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from tke.internal.storage.lease import LeasedStore, LeaseExpired
from tke.internal.storage.store import AlreadyExists, Event, EventType, NotFound

log = logging.getLogger(__name__)


class LostLeadership(Exception):
    """The lease could not be renewed in time; the work was stopped."""


class LeaderElector:
    def __init__(self, store: LeasedStore, key: str, identity: str, *, ttl: int = 10, margin: float = 1.0) -> None:
        if ttl < 2:
            raise ValueError("leader election ttl must be at least 2 seconds")
        self.store = store
        self.key = key
        self.identity = identity
        self.ttl = ttl
        self.margin = min(margin, ttl / 3)
        self.lease = 0
        self.leading = asyncio.Event()

    async def holder(self) -> str | None:
        try:
            return (await self.store.get(self.key)).value.decode()
        except NotFound:
            return None

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign until elected, then run `work` while leading. Returns when `work` returns;
        raises LostLeadership when the lease is lost, after `work` has stopped and the lease
        was given up (the caller may call `run` again to campaign again)."""
        await self._campaign()
        try:
            await self._lead(work)
        finally:
            self.leading.clear()
            await self._resign()

    async def _campaign(self) -> None:
        while True:
            try:
                lease = await self.store.grant(self.ttl)
            except Exception as err:  # whatever etcd says or does not say: try again
                log.warning("leader election: etcd: %s; trying again", _said(err))
                await asyncio.sleep(1.0)
                continue
            try:
                item = await self.store.create(self.key, self.identity.encode(), lease=lease)
            except AlreadyExists:
                with contextlib.suppress(Exception):
                    await self.store.revoke(lease)
                try:
                    await self._wait_for_vacancy()
                except Exception as err:
                    log.warning("leader election: watching the leader: %s; trying again", _said(err))
                    await asyncio.sleep(1.0)
                continue
            except Exception as err:
                with contextlib.suppress(Exception):
                    await self.store.revoke(lease)
                log.warning("leader election: etcd: %s; trying again", _said(err))
                await asyncio.sleep(1.0)
                continue
            except BaseException:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await self.store.revoke(lease)
                raise
            self.lease = lease
            log.info(
                "%s is the leader (key %s, lease %x, revision %d)", self.identity, self.key, lease, item.mod_revision
            )
            self.leading.set()
            return

    async def _wait_for_vacancy(self) -> None:
        try:
            item = await self.store.get(self.key)
        except NotFound:
            return
        log.info("%s is standing by: %s leads", self.identity, item.value.decode())
        # Watch from the revision we read, so a delete between the read and the watch is seen.
        revision = max(item.mod_revision, item.create_revision)
        async for message in self.store.watch(self.key, after_revision=revision):
            if isinstance(message, Event) and message.item.key == self.key and message.type is EventType.DELETE:
                return

    async def _lead(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.create_task(work())
        keeper = asyncio.create_task(self._keep_alive())
        try:
            await asyncio.wait({task, keeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Whatever ended the lead (the work, a lost lease, our own cancellation), the work
            # stops completely before the lease is given up: no step may outlive leadership.
            task.cancel()
            keeper.cancel()
            results = await asyncio.gather(keeper, task, return_exceptions=True)
        for result in results:  # a lost lease first, then the work's own failure
            if isinstance(result, Exception):
                raise result

    async def _keep_alive(self) -> None:
        renewed = time.monotonic()
        deadline = self.ttl - self.margin
        failing = False
        while True:
            left = deadline - (time.monotonic() - renewed)
            # Retry sooner while renewal fails; never sleep past the deadline.
            await asyncio.sleep(max(0.0, min(0.5 if failing else self.ttl / 3, left)))
            left = deadline - (time.monotonic() - renewed)
            if left <= 0:
                raise LostLeadership(f"lease not renewed for {deadline:.1f}s")
            try:
                async with asyncio.timeout(left):
                    await self.store.keep_alive(self.lease)
                renewed, failing = time.monotonic(), False
            except LeaseExpired:
                raise LostLeadership(f"lease {self.lease:x} expired") from None
            except Exception as err:  # a timeout, etcd unreachable or refusing: try again until the deadline
                failing = True
                log.warning("leader lease renewal failed: %s", _said(err))

    async def _resign(self) -> None:
        if self.lease:
            lease, self.lease = self.lease, 0
            # An unreachable etcd lets the lease expire by itself instead. A cancellation
            # during the revoke is not suppressed: it is the caller's, to stop for.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await self.store.revoke(lease)
            log.info("%s resigned", self.identity)


def _said(err: BaseException) -> str:
    """What an error says, in one line (a grpc error's details, not its repr)."""
    details = getattr(err, "details", None)
    text = details() if callable(details) else str(err)
    return str(text or type(err).__name__)
