"""The password-hashing lane: where every password hash and check of the built-in accounts runs,
so that no caller can take the server's CPU with them.

A scrypt hash costs about 40 ms of CPU and 16 MiB (tke.internal.auth.passwords), releases the GIL,
and nothing else throttles a successful Login, a CreateUser or a ChangePassword: on the default
thread pool, one user looping Login with its own password, or one tenant admin looping
CreateUser, ran several at once and took both cores of the machine from every tenant. Here:

- at most `hashes` run at once, on threads of the lane's own (not the default pool, which the
  audit log's writes use): the lane never takes more than `hashes` cores;
- at most `queue` calls wait for a thread, in all, in arrival order (so a call admitted waits at
  most `queue` hashes);
- every call names the shares it counts against (a user name, a tenant, a client address), and
  at most `per_user` calls of one user name and `per_tenant` of one tenant or one client address
  are in the lane (running or waiting) at once. So one user, one tenant or one client holds at
  most its share and the others' calls are admitted: a user looping Login holds `per_user` and
  another user's Login waits behind at most the calls already in the lane;
- beyond any of them, the call is refused before any hashing with RESOURCE_EXHAUSTED, an
  ErrorInfo `TOO_MANY_PASSWORD_HASHES` (metadata `scope`: `user`, `tenant`, `client`, `login`
  or `queue`, and `limit`) and a RetryInfo;
- an exempt call (the bootstrap administrator's creation at start, a platform administrator's
  call) is never refused: it waits its turn in the queue, past its bound.

A call holds its place, and its shares, until its hash has finished on its thread: a client
that cancels its call does not stop the hash (scrypt cannot be interrupted), so it does not get
its place back sooner either. A call cancelled while it waits leaves at once.

Memory: a counter per share with calls in the lane (gone with its last call) and a future per
waiting call; bounded by `queue` plus `hashes` plus the exempt calls (platform administrators',
bounded by the server's in-flight limit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tke.internal.rpc import errors

T = TypeVar("T")
REASON = "TOO_MANY_PASSWORD_HASHES"
KEY_LENGTH = 64  # as the login throttle's: longer than any valid user name and any address


@dataclass(frozen=True)
class Share:
    """What a call counts against: `scope` (`user`, `tenant` or `client`) and its value;
    `shown`, when set, is all a refusal says of it (a Login's caller is told neither the
    tenant nor which share is full)."""

    scope: str
    value: str
    shown: str = ""


class PasswordLane:
    def __init__(self, hashes: int, queue: int, per_tenant: int, per_user: int, retry_after: float = 1.0) -> None:
        if hashes < 1 or queue < 0 or per_tenant < 1 or per_user < 1:
            raise ValueError("the password lane needs hashes >= 1, queue >= 0, and shares of 1 or more")
        self.hashes = hashes
        self.queue = queue
        self.limits = {"user": per_user, "tenant": per_tenant, "client": per_tenant}
        self.retry_after = retry_after
        self.running = 0  # hashes on a thread now (or granted a thread)
        self.held: dict[tuple[str, str], int] = {}  # share -> its calls in the lane
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._executor = concurrent.futures.ThreadPoolExecutor(hashes, thread_name_prefix="tke-password")

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def run(self, shares: Sequence[Share], fn: Callable[..., T], *args: object, exempt: bool = False) -> T:
        """`fn(*args)` on a lane thread, once admitted and its turn has come."""
        keys = [(s.scope, s.value[:KEY_LENGTH]) for s in shares]
        if not exempt:
            self._admit(shares, keys)
        for key in keys:
            self.held[key] = self.held.get(key, 0) + 1
        granted = submitted = False
        try:
            await self._turn()
            granted = True
            loop = asyncio.get_running_loop()
            future = self._executor.submit(fn, *args)
            submitted = True
            # The place is given back when the hash has finished, not when the call ends.
            future.add_done_callback(lambda _: _call_soon(loop, self._finished, keys))
            return await asyncio.wrap_future(future)
        finally:
            if not submitted:  # cancelled while waiting, or the lane closed: nothing runs for it
                self._release(keys)
                if granted:
                    self._next(given_back=True)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _admit(self, shares: Sequence[Share], keys: list[tuple[str, str]]) -> None:
        for share, key in zip(shares, keys, strict=True):
            limit = self.limits[share.scope]
            if self.held.get(key, 0) >= limit:
                raise self._refusal(share, limit)
        if self.running >= self.hashes and len(self._waiting) >= self.queue:
            raise self._refusal(None, self.queue)

    async def _turn(self) -> None:
        """Wait for a thread: at once when one is free and nobody waits, else in arrival order."""
        if self.running < self.hashes and not self._waiting:
            self.running += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._next(given_back=True)  # granted a thread just as it was cancelled: pass it on
            else:
                self._waiting.remove(turn)
            raise

    def _finished(self, keys: list[tuple[str, str]]) -> None:
        self._release(keys)
        self._next(given_back=True)

    def _next(self, *, given_back: bool) -> None:
        if given_back:
            self.running -= 1
        while self.running < self.hashes and self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                self.running += 1

    def _release(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            left = self.held[key] - 1
            if left:
                self.held[key] = left
            else:
                del self.held[key]

    def _refusal(self, share: Share | None, limit: int) -> errors.ApiError:
        retry = f"retry in {self.retry_after:g}s"
        if share is None:
            return errors.resource_exhausted(
                f"the server is checking and waiting on its maximum of {self.hashes + self.queue} passwords at once; "
                + retry,
                reason=REASON,
                retry_after_seconds=self.retry_after,
                metadata={"scope": "queue", "limit": str(self.queue)},
            )
        if share.shown:
            # A Login's caller is not told which of the name's or its tenant's share is full, nor
            # their sizes: a tenant's share is counted only for a name that exists.
            what, metadata = share.shown, {"scope": "login"}
        else:
            what, metadata = f"{share.scope} {share.value[:KEY_LENGTH]!r}", {"scope": share.scope, "limit": str(limit)}
        return errors.resource_exhausted(
            f"{what} already has its share of the passwords the server checks at once; {retry}",
            reason=REASON,
            retry_after_seconds=self.retry_after,
            metadata=metadata,
        )


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object) -> None:
    """From a lane thread, on the loop; a loop closed meanwhile (the server stopped) has nothing
    left to release."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
