"""Request handling shared by every kind: tenancy, selectors, and watch streams. The servicer
(services.py) translates each kind's request messages into these calls.

Tenancy: an empty tenant_id means the caller's tenant. Only a caller with rights in another
tenant (platform administrators, or a grant there: tke.internal.auth.authority) names it, and
only one with rights in every tenant names "*" in List and Watch; anyone else naming another
tenant's object gets NOT_FOUND (its existence is not revealed), and a list, watch or create in
another tenant is PERMISSION_DENIED. The authorizers decide the verb; this is the tenant wall
behind any authorizer, even one that allows everything.

A kind served with `admins_only` (cluster credentials) answers only platform administrators:
anyone else gets PERMISSION_DENIED on every method, whatever the authorizers decided, since a
tenant administrator's policy ("*" on "*" in the tenant) must still never reach CA keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol

from google.protobuf import field_mask_pb2

from tke.internal.apiserver.registry import (
    ALL_TENANTS,
    OBJECT_TAG,
    ListResult,
    R,
    Registry,
    parse_resource_version,
    varint,
)
from tke.internal.apiserver.watch import Change, Closed, Hub
from tke.internal.apiserver.watch_quota import CatchupQuota, WatchQuota
from tke.internal.auth.authority import caller_reaches
from tke.internal.auth.identity import current_identity
from tke.internal.meta.labels import Selector, SelectorError, dns1123_label_error, parse_selector
from tke.internal.rpc import errors
from tke.internal.storage.store import Item
from tke.meta.v1 import meta_pb2

ADDED = meta_pb2.WATCH_EVENT_TYPE_ADDED
MODIFIED = meta_pb2.WATCH_EVENT_TYPE_MODIFIED
DELETED = meta_pb2.WATCH_EVENT_TYPE_DELETED
BOOKMARK = meta_pb2.WATCH_EVENT_TYPE_BOOKMARK


def _tenant(requested: str, field: str, *, collection: bool) -> str:
    identity = current_identity.get()
    if not requested or requested == identity.tenant_id:
        return identity.tenant_id
    if requested == ALL_TENANTS and not collection:
        raise errors.invalid_field(field, '"*" (every tenant) is only valid for List and Watch')
    if requested != ALL_TENANTS and (err := dns1123_label_error(requested)):
        raise errors.invalid_field(field, err)
    if caller_reaches(requested):
        return requested
    if collection:
        raise errors.permission_denied(f"user {identity.user!r} may only list and watch tenant {identity.tenant_id!r}")
    return ""  # a tenant nobody else can see: reads end in NOT_FOUND


class MessageBytes(Protocol):
    """Each tenant's bytes of messages not yet taken by their clients (InflightShares,
    tke.internal.auth.inflight_shares): `hold_message` refuses (an ApiError) what would go over."""

    def hold_message(self, tenant: str, size: int) -> None: ...

    def release_message(self, tenant: str, size: int) -> None: ...


def _selector(text: str) -> Selector:
    try:
        return parse_selector(text)
    except SelectorError as err:
        raise errors.invalid_field("label_selector", str(err)) from None


@dataclass
class ResourceAPI(Generic[R]):
    registry: Registry[R]
    hub: Hub[R] | None  # None: the kind has no Watch
    bookmark_interval: float = 10.0
    # Open watches per identity, shared by every kind's API (None: unlimited).
    watch_quota: WatchQuota | None = None
    # Catch-ups from etcd's history running at once, shared likewise (None: unlimited).
    catchup_quota: CatchupQuota | None = None
    admins_only: bool = False
    # Seconds a batched watch (WatchBatches) waits after each message for more changes to come.
    batch_interval: float = 0.25
    # Where a tenant's watch messages waiting for their client are counted (None: nowhere, as
    # without authentication, where every caller is a platform administrator).
    message_bytes: MessageBytes | None = None

    def _admit(self) -> None:
        identity = current_identity.get()
        if self.admins_only and not identity.is_platform_admin:
            raise errors.permission_denied(
                f"user {identity.user!r} may not access {self.registry.kind.plural}: platform administrators only"
            )

    def _named_tenant(self, requested: str, name: str) -> str:
        self._admit()
        tenant = _tenant(requested, "tenant_id", collection=False)
        if not tenant:
            raise errors.not_found(self.registry.kind.name, name, requested)
        return tenant

    async def create(self, obj: R | None) -> R:
        self._admit()
        if obj is None:
            raise errors.invalid_field(self.registry.kind.name, "is required")
        field = f"{self.registry.kind.name}.metadata.tenant_id"
        tenant = _tenant(obj.metadata.tenant_id, field, collection=False)
        if not tenant:
            user = current_identity.get().user
            raise errors.permission_denied(f"user {user!r} may not create objects in tenant {obj.metadata.tenant_id!r}")
        return await self.registry.create(tenant, obj)

    async def get(self, name: str, tenant_id: str) -> R:
        return await self.registry.get(self._named_tenant(tenant_id, name), name)

    async def get_wire(self, name: str, tenant_id: str) -> bytes:
        """What `get` returns, serialized (from the stored bytes: nothing decoded)."""
        tenant = self._named_tenant(tenant_id, name)
        return self.registry.wire(await self.registry.get_item(tenant, name))

    async def list(
        self,
        tenant_id: str,
        label_selector: str,
        page_size: int,
        continue_token: str,
        matches: Callable[[R], bool] | None = None,
        *,
        filters: bytes = b"",
        wire: bool = False,
    ) -> ListResult[R]:
        """A page of a List. `filters` stands for the kind's own filters of the request (see
        services.py): a continue token is only valid with the selector, page size and filters
        it was issued for. `wire`: the items serialized (ListResult.framed)."""
        self._admit()
        tenant = _tenant(tenant_id, "tenant_id", collection=True)
        query = b"\0".join([label_selector.encode(), str(page_size).encode(), filters])
        return await self.registry.list(
            tenant, _selector(label_selector), page_size, continue_token, matches, query=query, wire=wire
        )

    async def update(self, obj: R, mask: field_mask_pb2.FieldMask) -> R:
        tenant = self._named_tenant(obj.metadata.tenant_id, obj.metadata.name)
        return await self.registry.update(tenant, obj, mask)

    async def update_status(self, obj: R) -> R:
        tenant = self._named_tenant(obj.metadata.tenant_id, obj.metadata.name)
        return await self.registry.update_status(tenant, obj)

    async def delete(self, name: str, tenant_id: str, resource_version: str) -> R:
        return await self.registry.delete(self._named_tenant(tenant_id, name), name, resource_version)

    async def watch(
        self,
        tenant_id: str,
        label_selector: str,
        resource_version: str,
        matches: Callable[[R], bool] | None = None,
        *,
        batched: bool = False,
    ) -> AsyncIterator[bytes]:
        """A client watch (see WatchClustersRequest), as the kind's event messages, serialized;
        `batched`: as event batch messages, each with every event that was ready (WatchBatches).
        The watch counts against its identity's open watches until it ends, and while it catches
        up from etcd's history, against the catch-ups running at once (CatchupQuota). A tenant's
        messages count against its bytes not yet delivered (`message_bytes`) from when they are
        made until grpc has taken them, which it does as the client's flow control lets it: a
        page of the initial state while it is sent, each later message while it is handed over.
        One that would go over ends the watch (RESOURCE_EXHAUSTED, scope `tenant_bytes`)."""
        self._admit()
        identity = current_identity.get()
        counted = None if self.message_bytes is None or identity.is_platform_admin else self.message_bytes
        quota = contextlib.nullcontext() if self.watch_quota is None else self.watch_quota.hold(identity)
        with quota:
            watch = self._watch(tenant_id, label_selector, resource_version, matches, batched)
            async with contextlib.aclosing(watch):
                async for pieces in watch:
                    if counted is None:
                        for message in pieces:
                            yield message
                        continue
                    size = pieces.size if isinstance(pieces, _Page) else len(pieces[0])
                    counted.hold_message(identity.tenant_id, size)
                    try:
                        for message in pieces:
                            yield message
                    finally:
                        counted.release_message(identity.tenant_id, size)

    async def _watch(
        self,
        tenant_id: str,
        label_selector: str,
        resource_version: str,
        matches: Callable[[R], bool] | None,
        batched: bool,
    ) -> AsyncGenerator[_Page | tuple[bytes], None]:
        """The watch's messages: each page of its initial state as a `_Page` (its messages made
        as they are sent), every later message alone."""
        tenant = _tenant(tenant_id, "tenant_id", collection=True)
        selector = _selector(label_selector)
        after = parse_resource_version(resource_version, "resource_version")
        assert self.hub is not None, "this kind is not watchable"
        if after is not None and after > self.hub.revision and after > await self.registry.store.current_revision():
            # No List, event or bookmark ever handed this out: the watch would wait forever.
            raise errors.invalid_field(
                "resource_version", f"{after} is newer than the storage's latest revision: not a resource version"
            )
        send = _batch if batched else _single

        def selecting(obj: R | None) -> bool:
            return obj is not None and selector.matches(obj.metadata.labels) and (matches is None or matches(obj))

        selected = selecting if not selector.empty or matches is not None else None

        position = after or 0
        if after is None:
            # Initial state: everything that exists now, then a bookmark, then changes.
            token = ""
            while True:
                page = await self.registry.list(tenant, selector, 0, token, matches, wire=True)
                position = page.revision
                if page.framed:
                    yield _Page(page.framed, batched)
                token = page.continue_token
                if not token:
                    break
            yield (_send_one(send, self._bookmark(position)),)

        last_bookmark = time.monotonic()
        try:
            batch_bytes = _BATCH_BYTES if batched else 0
            catchup = None if self.catchup_quota is None else self.catchup_quota.slot(current_identity.get())
            subscription = self.hub.subscribe(self.registry.tenant_prefix(tenant), position, batch_bytes, catchup)
            # Closed with the stream, not when collected: a catch-up's slot and etcd watch go at once.
            async with contextlib.aclosing(subscription):
                async for changes in subscription:
                    if isinstance(changes, int):  # only the progress moved
                        position = max(position, changes)
                    else:
                        position = changes[-1].revision
                        events = [e for change in changes if (e := self._event(change, selected)) is not None]
                        for out in send(events):
                            yield (out,)
                        if batched and events:
                            # Let the next changes gather: one message per interval at most.
                            await asyncio.sleep(self.batch_interval)
                    if time.monotonic() - last_bookmark >= self.bookmark_interval:
                        last_bookmark = time.monotonic()
                        yield (_send_one(send, self._bookmark(position)),)
        except Closed as closed:
            if closed.error is not None:
                raise closed.error from None
            # The server is stopping: tell the client where to resume, then end cleanly.
            yield (_send_one(send, self._bookmark(position)),)

    def _event(self, change: Change[R], selected: Callable[[R | None], bool] | None) -> bytes | None:
        """The change as this watcher's event, serialized (shared by every watcher that gets the
        same event type), or None when the watcher's filters (None: none) see no change."""
        if selected is None:  # as below, with every object selected
            if change.deleted:
                return change.encoded(DELETED, self._encode) if change.existed else None
            return change.encoded(MODIFIED if change.existed else ADDED, self._encode)
        now = not change.deleted and selected(change.obj)
        before = change.prev is not None and selected(change.prev)
        if change.deleted:
            event_type = DELETED if before else None
        elif now:
            event_type = MODIFIED if before else ADDED
        else:
            event_type = DELETED if before else None
        return None if event_type is None else change.encoded(event_type, self._encode)

    def _encode(self, event_type: int, item: Item) -> bytes:
        return _TYPE_TAG + varint(event_type) + self.registry.framed(item)

    def _bookmark(self, revision: int) -> bytes:
        obj = self.registry.kind.message()
        obj.metadata.resource_version = str(revision)
        body = obj.SerializeToString()
        return _TYPE_TAG + varint(BOOKMARK) + OBJECT_TAG + varint(len(body)) + body


# A watch event message is `type` (field 1, a varint) then `object` (field 2: OBJECT_TAG), and
# a batch is its events as field 1; services.py checks these numbers for every kind.
_TYPE_TAG = b"\x08"
_ADDED_TAG = _TYPE_TAG + varint(ADDED)
_BATCH_TAG = b"\x0a"
# Stored bytes of the changes one batch carries at most (at least one change): with objects of
# at most 1 MiB, a batch stays well under a client's default 4 MiB message limit.
_BATCH_BYTES = 1 << 20


class _Page:
    """A page of a watch's initial state: its objects' encodings, sent as ADDED events, each
    made when it is sent (Watch), or in batches of about _BATCH_BYTES (WatchBatches), so that a
    watcher whose client does not read holds one message of copies, not a page of them."""

    def __init__(self, framed: list[bytes], batched: bool) -> None:
        self.framed = framed
        self.batched = batched
        self.size = sum(map(len, framed))

    def __iter__(self) -> Iterator[bytes]:
        if not self.batched:
            for framed in self.framed:
                yield _ADDED_TAG + framed
            return
        events: list[bytes] = []
        size = 0
        for framed in self.framed:
            events.append(_ADDED_TAG + framed)
            size += len(framed)
            if size >= _BATCH_BYTES:
                yield from _batch(events)
                events, size = [], 0
        yield from _batch(events)


def _single(events: list[bytes]) -> list[bytes]:
    """Watch: a message per event."""
    return events


def _batch(events: list[bytes]) -> list[bytes]:
    """WatchBatches: one message with every event (none without events)."""
    if not events:
        return []
    parts: list[bytes] = []
    for e in events:  # each event's bytes joined once, not copied per piece
        parts += (_BATCH_TAG, varint(len(e)), e)
    return [b"".join(parts)]


def _send_one(send: Callable[[list[bytes]], list[bytes]], event: bytes) -> bytes:
    """One event as the watch sends it (a message of its own, or a batch of one)."""
    return send([event])[0]
