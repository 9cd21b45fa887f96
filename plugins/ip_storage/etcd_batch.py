"""Group commit for the etcd IP storage: compare-and-swap transactions that wait behind ones
already on their way to etcd travel together, as one etcd transaction.

An Allocate or a Release is one etcd transaction; under load most of its cost in ipamd is the
gRPC call to etcd itself, so concurrent ones share a call. Invariants:
- Only transactions that touch disjoint keys travel together: none writes a key another one
  writes or compares. Then the merged transaction (every compare, every write) is what applying
  them one after another would be, all at one revision, and it applies whole or not at all.
- A merged transaction whose compare failed reads every compared key instead: the transactions
  whose compares held at that revision wait for the next merged one; each of the others is sent
  again alone, so its caller gets the answer (and the failure reads) of its own transaction,
  exactly as without batching.
- A merged transaction interrupted by a broken connection raises the same Unavailable to every
  caller: each resolves its own write by reading it back, as it would alone (all applied or
  none). One etcd refuses whole for another reason (too large, no space) is sent again one by
  one, so each caller gets its own answer; no caller is ever left waiting.
- Nothing waits when nothing is in flight; at most `in_flight` transactions (merged or not) are
  on their way at once, and a merged one stays within etcd's limit of operations per
  transaction (`--max-txn-ops`, 128 by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aetcd import rpc

from tke.internal.storage.store import Unavailable

Send = Callable[[rpc.TxnRequest], Awaitable[rpc.TxnResponse]]
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops, per list (compares, success, failure)
_R = rpc.Compare.CompareResult
_T = rpc.Compare.CompareTarget


def _holds(c: rpc.Compare, kv: rpc.KeyValue | None) -> bool:
    """Whether compare `c` holds for `kv` (None: the key is absent). Compares of values or
    leases are not evaluated here (False: that transaction is then sent alone)."""
    have: int
    want: int
    if c.target == _T.MOD:
        have, want = (kv.mod_revision if kv else 0), c.mod_revision
    elif c.target == _T.CREATE:
        have, want = (kv.create_revision if kv else 0), c.create_revision
    elif c.target == _T.VERSION:
        have, want = (kv.version if kv else 0), c.version
    else:
        return False
    if c.result == _R.EQUAL:
        return have == want
    if c.result == _R.NOT_EQUAL:
        return have != want
    return have > want if c.result == _R.GREATER else have < want


@dataclass(eq=False)  # each is itself: compared by identity
class _Pending:
    request: rpc.TxnRequest
    future: asyncio.Future[rpc.TxnResponse]
    writes: set[bytes] = field(default_factory=set)
    compared: set[bytes] = field(default_factory=set)
    alone: bool = False  # it writes a range of keys or compares one: it travels alone

    def __post_init__(self) -> None:
        for op in self.request.success:
            if op.HasField("request_put"):
                self.writes.add(bytes(op.request_put.key))
            elif op.HasField("request_delete_range"):
                self.writes.add(bytes(op.request_delete_range.key))
                self.alone |= bool(op.request_delete_range.range_end)
        for c in self.request.compare:
            self.compared.add(bytes(c.key))
            self.alone |= bool(c.range_end)


class TxnBatcher:
    """Sends transactions to etcd through `send`, merging those that wait (module docstring)."""

    def __init__(self, send: Send, *, in_flight: int = 1, max_ops: int = MAX_TXN_OPS) -> None:
        self._send = send
        self._limit = in_flight
        self._max_ops = max_ops
        self._queue: list[_Pending] = []
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def txn(self, request: rpc.TxnRequest) -> rpc.TxnResponse:
        if self._busy < self._limit and not self._queue:
            self._busy += 1
            try:
                return await self._send(request)
            finally:
                self._busy -= 1
                self._start()
        future: asyncio.Future[rpc.TxnResponse] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(request, future))
        self._start()
        return await future

    def _start(self) -> None:
        while self._busy < self._limit and self._queue:
            batch = self._take()
            if not batch:
                continue
            self._busy += 1
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Pending]:
        """The first waiting transactions that may travel together; the others keep waiting."""
        batch: list[_Pending] = []
        writes: set[bytes] = set()
        compared: set[bytes] = set()
        counts = [0, 0, 0]
        rest: list[_Pending] = []
        for p in self._queue:
            if p.future.done():
                continue  # its caller gave up waiting
            r = p.request
            sizes = (len(r.compare), len(r.success), len(p.compared))  # failure: a read per compared key
            fits = all(n + s <= self._max_ops for n, s in zip(counts, sizes, strict=True))
            disjoint = not (p.writes & (writes | compared)) and not (p.compared & writes)
            if batch and not (fits and disjoint and not p.alone and not batch[0].alone):
                rest.append(p)
                continue
            batch.append(p)
            writes |= p.writes
            compared |= p.compared
            counts = [n + s for n, s in zip(counts, sizes, strict=True)]
        self._queue = rest
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                await self._alone(batch[0])
                return
            compared = sorted({key for p in batch for key in p.compared})
            merged = rpc.TxnRequest(
                compare=[c for p in batch for c in p.request.compare],
                success=[op for p in batch for op in p.request.success],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key)) for key in compared],
            )
            try:
                resp = await self._send(merged)
            except asyncio.CancelledError:
                self._fail(batch, Unavailable("etcd: transaction cancelled", ambiguous=True))
                raise
            except Unavailable as err:
                self._fail(batch, err)
                return
            except Exception:  # refused whole (too large, no space, ...): each on its own says why
                resp = None
            if resp is not None and resp.succeeded:
                offset = 0
                for p in batch:
                    n = len(p.request.success)
                    mine = rpc.TxnResponse(
                        header=resp.header, succeeded=True, responses=resp.responses[offset : offset + n]
                    )
                    offset += n
                    if not p.future.done():
                        p.future.set_result(mine)
                return
            lost = batch
            if resp is not None:
                state = {bytes(kv.key): kv for r in resp.responses for kv in r.response_range.kvs}
                lost = [p for p in batch if not all(_holds(c, state.get(bytes(c.key))) for c in p.request.compare)]
                if lost:
                    # The others' compares held: they go with the next merged transaction.
                    self._queue[:0] = [p for p in batch if p not in lost]
                else:
                    lost = batch  # no compare failed, yet it did: trust nothing, each alone
            await asyncio.gather(*(self._alone(p) for p in lost))
        finally:
            # No caller waits forever, whatever happened above (the requeued ones are answered later).
            self._fail(
                [p for p in batch if p not in self._queue], Unavailable("etcd: transaction lost", ambiguous=True)
            )
            self._busy -= 1
            self._start()

    @staticmethod
    def _fail(batch: list[_Pending], err: Exception) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(err)

    async def _alone(self, p: _Pending) -> None:
        if p.future.done():
            return
        try:
            resp = await self._send(p.request)
        except asyncio.CancelledError:
            self._fail([p], Unavailable("etcd: transaction cancelled", ambiguous=True))
            raise
        except Exception as err:  # the caller's to handle, as if it had sent it itself
            self._fail([p], err)
            return
        if not p.future.done():
            p.future.set_result(resp)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
