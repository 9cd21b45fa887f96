"""The Store contract over etcd v3: every write is one transaction with a compare.

- create: compare create_revision == 0 (plus any guards' mod_revision), then put.
- update/delete: compare mod_revision == expected, then put/delete.
- claims and releases ride in the same transaction: a claim compares its key's
  create_revision == 0 and puts it, a release compares its key's mod_revision and deletes it.
  On failure the transaction reads every key it compared, so the error says which one.
- A write interrupted by a broken connection may or may not have been applied: the store reads
  the key back and decides (tke.internal.storage.interrupted: our value is there: done; the key
  is still at the expected revision: try again; anything else: someone else won). So a caller
  never sees a spurious conflict for its own write, and never a lost one. NOSPACE is resolved
  the same way: etcd applies the write that takes it over its quota and still answers NOSPACE
  (only the writes after it are refused unapplied), so that one is found applied and succeeds.
- watch re-creates etcd's watch after a broken stream from the last revision it delivered + 1,
  so events are neither lost nor repeated; a compacted start revision raises Compacted.
- watch's progress notifications never claim a revision whose events are still to come. etcd
  before 3.4.25 (and 3.5.0-3.5.7) answers a requested notification at once with its current
  revision, ahead of the events it has queued for the watch (etcd issue 15220: a watch reading
  3,000 revisions of history got "progress 3001" before its first event). With such an etcd
  the store never requests one; it asks for etcd's timed notifications (progress_notify), which
  are sent only to a watch that has sent all its events, through the same queue, every
  --experimental-watch-progress-notify-interval of etcd (10 minutes unless set: the project's
  etcd runs with 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import NoReturn

import grpc
from aetcd import rpc

from tke.internal.storage.etcd.connection import EtcdConfig, EtcdConnection, backoff_sleep
from tke.internal.storage.interrupted import Outcome, Resolution, resolve
from tke.internal.storage.lease import LeaseExpired
from tke.internal.storage.store import (
    AlreadyExists,
    Claim,
    Claimed,
    Compacted,
    Conflict,
    Event,
    EventType,
    FutureRevision,
    Guard,
    Item,
    NoSpace,
    NotFound,
    Page,
    PreconditionFailed,
    Progress,
    Unavailable,
    WatchMessage,
)
from tke.internal.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_EQUAL = rpc.Compare.CompareResult.EQUAL
_CREATE = rpc.Compare.CompareTarget.CREATE
_MOD = rpc.Compare.CompareTarget.MOD


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (etcd's range_end)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


def _item(kv: rpc.KeyValue) -> Item:
    return Item(
        key=kv.key.decode(),
        value=kv.value,
        mod_revision=kv.mod_revision,
        create_revision=kv.create_revision,
    )


def _absent(key: bytes) -> rpc.Compare:
    return rpc.Compare(key=key, result=_EQUAL, target=_CREATE, create_revision=0)


def _at(key: bytes, revision: int) -> rpc.Compare:
    return rpc.Compare(key=key, result=_EQUAL, target=_MOD, mod_revision=revision)


def _guarded(guards: Sequence[Guard]) -> list[rpc.Compare]:
    return [_at(g.key.encode(), g.mod_revision) for g in guards]


def _claimed(claims: Sequence[Claim]) -> list[rpc.Compare]:
    return [_absent(c.key.encode()) for c in claims]


def _put(key: bytes, value: bytes, lease: int) -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def _claim_puts(claims: Sequence[Claim], lease: int) -> list[rpc.RequestOp]:
    return [_put(c.key.encode(), c.value, lease) for c in claims]


def _touch_puts(touches: Sequence[str]) -> list[rpc.RequestOp]:
    # Never bound to a lease: a touch records a write, it must outlive the written key.
    return [_put(key.encode(), b"", 0) for key in touches]


def _deletes(releases: Sequence[Guard]) -> list[rpc.RequestOp]:
    return [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=g.key.encode())) for g in releases]


def _read(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def _reads(keys: Sequence[Guard] | Sequence[Claim]) -> list[rpc.RequestOp]:
    return [_read(k.key.encode()) for k in keys]


def _why(
    reads: Sequence[rpc.ResponseOp], guards: Sequence[Guard], claims: Sequence[Claim], releases: Sequence[Guard]
) -> NoReturn:
    """The error of a failed transaction whose own key held: the first other key whose compare
    failed, from the failure branch's reads (guards, then claims, then releases)."""
    found = [op.response_range.kvs[0] if op.response_range.kvs else None for op in reads]
    for guard, kv in zip(guards, found[: len(guards)], strict=True):
        if kv is None or kv.mod_revision != guard.mod_revision:
            raise PreconditionFailed(guard)
    rest = found[len(guards) :]
    for claim, kv in zip(claims, rest[: len(claims)], strict=True):
        if kv is not None:
            raise Claimed(claim, _item(kv))
    for release, kv in zip(releases, rest[len(claims) :], strict=True):
        if kv is None or kv.mod_revision != release.mod_revision:
            raise PreconditionFailed(release)
    raise Unavailable("etcd refused a transaction whose every compare holds", ambiguous=True)


def _is_compacted(err: grpc.aio.AioRpcError) -> bool:
    return err.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (err.details() or "")


def _is_future(err: grpc.aio.AioRpcError) -> bool:
    return err.code() == grpc.StatusCode.OUT_OF_RANGE and "future revision" in (err.details() or "")


class EtcdStore:
    """Store over etcd. Keys are stored as given; the caller puts its prefix in them."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._conn = EtcdConnection(config)
        self._progress_ordered: bool | None = None  # learnt from the first member that answers

    @property
    def connection(self) -> EtcdConnection:
        """The channel and stubs, for etcd-only maintenance (compaction)."""
        return self._conn

    async def close(self) -> None:
        await self._conn.close()

    # -- reads ------------------------------------------------------------------------------

    async def get(self, key: str) -> Item:
        resp = await self._conn.call(self._conn.kv.Range, rpc.RangeRequest(key=key.encode()), idempotent=True)
        if not resp.kvs:
            raise NotFound(key)
        return _item(resp.kvs[0])

    async def _get_or_none(self, key: str) -> Item | None:
        try:
            return await self.get(key)
        except NotFound:
            return None

    async def _resolve(self, key: str, value: bytes | None, expected_revision: int) -> Resolution[Item]:
        """What became of an interrupted write of `value` (None: a delete) to `key`."""
        return await resolve(lambda: self._get_or_none(key), value=value, expected_revision=expected_revision)

    async def list(self, prefix: str, *, start: str = "", limit: int = 0, revision: int = 0) -> Page:
        bprefix = prefix.encode()
        request = rpc.RangeRequest(
            key=max(start, prefix).encode(),  # never below the prefix: only its keys
            range_end=prefix_end(bprefix),
            limit=limit,
            revision=revision,
        )
        try:
            resp = await self._conn.call(self._conn.kv.Range, request, idempotent=True)
        except grpc.aio.AioRpcError as err:
            if _is_compacted(err):
                raise Compacted(revision, 0) from None
            if _is_future(err):
                raise FutureRevision(revision) from None
            raise
        # The header carries the store's current revision; a read at an older one is at that one.
        return Page(items=[_item(kv) for kv in resp.kvs], revision=revision or resp.header.revision, more=resp.more)

    async def server_version(self) -> str:
        """The etcd version of the member that answers ("3.4.23")."""
        resp = await self._conn.call(self._conn.maintenance.Status, rpc.StatusRequest(), idempotent=True)
        return str(resp.version)

    async def progress_ordered(self) -> bool:
        """Whether etcd sends a requested progress notification only after the events it claims
        (see the module's docstring)."""
        if self._progress_ordered is None:
            version = await self.server_version()
            self._progress_ordered = progress_is_ordered(version)
            if not self._progress_ordered:
                log.info(
                    "etcd %s may answer a requested progress notification ahead of the changes it claims (etcd "
                    "issue 15220): watches use etcd's timed notifications instead (3.4.25 and 3.5.8 lift this)",
                    version,
                )
        return self._progress_ordered

    async def current_revision(self) -> int:
        request = rpc.RangeRequest(key=b"\0", count_only=True)
        resp = await self._conn.call(self._conn.kv.Range, request, idempotent=True)
        return int(resp.header.revision)

    # -- writes -----------------------------------------------------------------------------

    async def _txn(self, request: rpc.TxnRequest, lease: int = 0) -> rpc.TxnResponse:
        try:
            return await self._conn.call(self._conn.kv.Txn, request, idempotent=False)
        except grpc.aio.AioRpcError as err:
            if lease and err.code() == grpc.StatusCode.NOT_FOUND:
                raise LeaseExpired(lease) from None  # "etcdserver: requested lease not found"
            raise

    async def create(
        self,
        key: str,
        value: bytes,
        *,
        guards: Sequence[Guard] = (),
        claims: Sequence[Claim] = (),
        touches: Sequence[str] = (),
        lease: int = 0,
    ) -> Item:
        bkey = key.encode()
        request = rpc.TxnRequest(
            compare=[_absent(bkey), *_guarded(guards), *_claimed(claims)],
            success=[_put(bkey, value, lease), *_claim_puts(claims, lease), *_touch_puts(touches)],
            # On failure, tell which compare failed: read the key and every other key compared.
            failure=[_read(bkey), *_reads(guards), *_reads(claims)],
        )
        started = asyncio.get_running_loop().time()
        while True:
            try:
                resp = await self._txn(request, lease)
            except (Unavailable, NoSpace) as err:
                # Did our put land? Our value (it holds a fresh uid) under the key says yes.
                found = await self._resolve(key, value, 0)
                if found.outcome is Outcome.APPLIED and found.current is not None:
                    return found.current
                if found.outcome is Outcome.OVERTAKEN:
                    raise AlreadyExists(key) from None
                if not isinstance(err, NoSpace) and not self._conn.deadline_passed(started):
                    await backoff_sleep(0.1)
                    continue
                raise err
            if resp.succeeded:
                rev = resp.header.revision
                return Item(key=key, value=value, mod_revision=rev, create_revision=rev)
            if resp.responses[0].response_range.kvs:
                raise AlreadyExists(key)
            _why(resp.responses[1:], guards, claims, ())

    async def update(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int,
        claims: Sequence[Claim] = (),
        releases: Sequence[Guard] = (),
        touches: Sequence[str] = (),
        lease: int = 0,
    ) -> Item:
        bkey = key.encode()
        request = rpc.TxnRequest(
            compare=[_at(bkey, expected_revision), *_claimed(claims), *_guarded(releases)],
            # The key's revisions after the put (keys only: not the value again), for its
            # create_revision.
            success=[
                _put(bkey, value, lease),
                rpc.RequestOp(request_range=rpc.RangeRequest(key=bkey, keys_only=True)),
                *_claim_puts(claims, lease),
                *_deletes(releases),
                *_touch_puts(touches),
            ],
            failure=[_read(bkey), *_reads(claims), *_reads(releases)],
        )
        started = asyncio.get_running_loop().time()
        while True:
            try:
                resp = await self._txn(request, lease)
            except (Unavailable, NoSpace) as err:
                found = await self._resolve(key, value, expected_revision)
                if found.current is None:
                    raise NotFound(key) from None
                if found.outcome is Outcome.APPLIED:
                    return found.current
                if found.outcome is Outcome.OVERTAKEN:
                    raise Conflict(key, found.current) from None
                if not isinstance(err, NoSpace) and not self._conn.deadline_passed(started):
                    await backoff_sleep(0.1)
                    continue
                raise err
            if resp.succeeded:
                kv = resp.responses[1].response_range.kvs[0]
                return Item(key=key, value=value, mod_revision=kv.mod_revision, create_revision=kv.create_revision)
            kvs = resp.responses[0].response_range.kvs
            if not kvs:
                raise NotFound(key)
            if kvs[0].mod_revision != expected_revision:
                raise Conflict(key, _item(kvs[0]))
            _why(resp.responses[1:], (), claims, releases)

    async def delete(
        self, key: str, *, expected_revision: int, releases: Sequence[Guard] = (), touches: Sequence[str] = ()
    ) -> int:
        bkey = key.encode()
        request = rpc.TxnRequest(
            compare=[_at(bkey, expected_revision), *_guarded(releases)],
            success=[
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=bkey)),
                *_deletes(releases),
                *_touch_puts(touches),
            ],
            failure=[_read(bkey), *_reads(releases)],
        )
        started = asyncio.get_running_loop().time()
        while True:
            try:
                resp = await self._txn(request)
            except (Unavailable, NoSpace) as err:
                found = await self._resolve(key, None, expected_revision)
                if found.outcome is Outcome.APPLIED:
                    return await self.current_revision()
                if found.outcome is Outcome.OVERTAKEN:
                    raise Conflict(key, found.current) from None
                if not isinstance(err, NoSpace) and not self._conn.deadline_passed(started):
                    await backoff_sleep(0.1)
                    continue
                raise err
            if resp.succeeded:
                return int(resp.header.revision)
            kvs = resp.responses[0].response_range.kvs
            if not kvs:
                raise NotFound(key)
            if kvs[0].mod_revision != expected_revision:
                raise Conflict(key, _item(kvs[0]))
            _why(resp.responses[1:], (), (), releases)

    async def compact(self, revision: int) -> None:
        """Drop history before `revision` (operators and tests)."""
        await self._conn.call(
            self._conn.kv.Compact, rpc.CompactionRequest(revision=revision, physical=True), idempotent=True
        )

    # -- leases (see tke.internal.storage.lease) -------------------------------------------------

    async def grant(self, ttl: int) -> int:
        # A lost answer to a grant only leaks a lease that expires by itself: safe to retry.
        request = rpc.LeaseGrantRequest(TTL=max(1, int(ttl)))
        resp = await self._conn.call(self._conn.lease.LeaseGrant, request, idempotent=True)
        return int(resp.ID)

    async def keep_alive(self, lease: int) -> int:
        # etcd renews leases over a stream only; one request and its answer renew once.
        timeout = self.config.request_timeout
        call = self._conn.lease.LeaseKeepAlive(timeout=timeout, wait_for_ready=True)
        try:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
            resp = await call.read()
        except grpc.aio.AioRpcError as err:
            raise Unavailable(f"etcd: lease keepalive: {err.code().name.lower()}: {err.details()}") from None
        finally:
            call.cancel()
        if resp is grpc.aio.EOF:
            raise Unavailable("etcd ended the lease keepalive stream")
        if resp.TTL <= 0:
            raise LeaseExpired(lease)
        return int(resp.TTL)

    async def revoke(self, lease: int) -> None:
        try:
            await self._conn.call(self._conn.lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease), idempotent=True)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise

    # -- watch ------------------------------------------------------------------------------

    async def watch(
        self,
        prefix: str,
        *,
        after_revision: int,
        progress_interval: float = 5.0,
        progress_wanted: asyncio.Event | None = None,
    ) -> AsyncIterator[WatchMessage]:
        """The Store's watch; besides every `progress_interval`, a progress notification is
        requested whenever `progress_wanted` is set (the caller waits to know how far it is),
        when etcd orders those with events; otherwise notifications come at etcd's own interval."""
        bprefix = prefix.encode()
        next_revision = after_revision + 1
        delay = 0.1
        while True:
            call = self._conn.watch.Watch(wait_for_ready=True)
            ticker: asyncio.Task[None] | None = None
            try:
                ordered = await self.progress_ordered()
                # fragment: etcd sends the history a watch starts with as one response per up to
                # 1000 revisions; with big objects (and their previous states) that outgrows the
                # 64 MiB this client accepts, and the watch would fail and resume at the same
                # revision forever. Fragments are at most etcd's request size (or one event).
                create = rpc.WatchCreateRequest(
                    key=bprefix,
                    range_end=prefix_end(bprefix),
                    start_revision=next_revision,
                    prev_kv=True,
                    fragment=True,
                    progress_notify=not ordered,
                )
                await call.write(rpc.WatchRequest(create_request=create))
                if ordered:
                    ticker = asyncio.create_task(_request_progress(call, progress_interval, progress_wanted))
                # The events of the last revision a response carried, held back until the revision
                # is known to be whole: etcd may cut one transaction's events between fragments,
                # and a stream that breaks between them must resume at that revision, not past it
                # (then the held events come again, whole, and nothing is delivered twice).
                held: list[rpc.Event] = []
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        raise Unavailable("etcd ended the watch stream")
                    if resp.compact_revision:
                        raise Compacted(next_revision, resp.compact_revision)
                    if resp.canceled:
                        raise Unavailable(f"etcd canceled the watch: {resp.cancel_reason}")
                    delay = 0.1
                    if resp.created:
                        continue
                    for ev in resp.events:
                        if held and ev.kv.mod_revision != held[0].kv.mod_revision:
                            for whole in held:
                                yield _event(whole)
                            next_revision = held[0].kv.mod_revision + 1
                            held = []
                        held.append(ev)
                    if held and not resp.fragment:
                        for whole in held:
                            yield _event(whole)
                        next_revision = held[0].kv.mod_revision + 1
                        held = []
                    if not resp.events and not held and resp.header.revision >= next_revision - 1:
                        # A progress notification: nothing under the prefix up to here.
                        next_revision = resp.header.revision + 1
                        yield Progress(resp.header.revision)
            except (grpc.aio.AioRpcError, Unavailable) as err:
                if isinstance(err, grpc.aio.AioRpcError) and _is_compacted(err):
                    raise Compacted(next_revision, 0) from None
                detail = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
                log.warning("etcd watch on %s broken (%s); resuming from revision %d", prefix, detail, next_revision)
                await backoff_sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                await cancel_and_wait(ticker)
                call.cancel()


def progress_is_ordered(version: str) -> bool:
    """Whether etcd `version` sends a requested progress notification only after the events it
    claims (etcd issue 15220, fixed in 3.4.25 and 3.5.8)."""
    try:
        major, minor, patch = (int(part) for part in version.split("-", maxsplit=1)[0].split(".")[:3])
    except ValueError:
        return False
    v = (major, minor, patch)
    return (3, 4, 25) <= v < (3, 5, 0) or v >= (3, 5, 8)


def _event(ev: rpc.Event) -> Event:
    kv = ev.kv
    prev = ev.prev_kv.value if ev.HasField("prev_kv") else None
    if ev.type == rpc.Event.EventType.DELETE:
        # etcd's delete event carries only the key and revision; the last state is prev_kv.
        item = Item(
            key=kv.key.decode(),
            value=prev or b"",
            mod_revision=kv.mod_revision,
            create_revision=ev.prev_kv.create_revision if ev.HasField("prev_kv") else 0,
        )
        return Event(type=EventType.DELETE, item=item, prev_value=prev)
    return Event(type=EventType.PUT, item=_item(kv), prev_value=prev)


async def _request_progress(
    call: grpc.aio.StreamStreamCall[rpc.WatchRequest, rpc.WatchResponse],
    interval: float,
    wanted: asyncio.Event | None,
) -> None:
    """Ask etcd now and then how far the watch has come, so that a quiet prefix still advances
    (bookmarks, and a resume point that does not fall behind compaction), and whenever `wanted`
    is set (one request for every waiter that set it meanwhile)."""
    request = rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
    with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
        while True:
            if wanted is None:
                await asyncio.sleep(interval)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await wanted.wait()
                wanted.clear()
            await call.write(request)
