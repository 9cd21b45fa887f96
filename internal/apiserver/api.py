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

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic

from google.protobuf import field_mask_pb2

from tke.internal.apiserver.registry import ALL_TENANTS, ListResult, R, Registry, parse_resource_version
from tke.internal.apiserver.watch import Change, Closed, Hub
from tke.internal.apiserver.watch_quota import WatchQuota
from tke.internal.auth.authority import caller_reaches
from tke.internal.auth.identity import current_identity
from tke.internal.meta.labels import Selector, SelectorError, dns1123_label_error, parse_selector
from tke.internal.rpc import errors
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
    admins_only: bool = False

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

    async def list(
        self,
        tenant_id: str,
        label_selector: str,
        page_size: int,
        continue_token: str,
        matches: Callable[[R], bool] | None = None,
        *,
        filters: bytes = b"",
    ) -> ListResult[R]:
        """A page of a List. `filters` stands for the kind's own filters of the request (see
        services.py): a continue token is only valid with the selector, page size and filters
        it was issued for."""
        self._admit()
        tenant = _tenant(tenant_id, "tenant_id", collection=True)
        query = b"\0".join([label_selector.encode(), str(page_size).encode(), filters])
        return await self.registry.list(
            tenant, _selector(label_selector), page_size, continue_token, matches, query=query
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
    ) -> AsyncIterator[tuple[int, R]]:
        """(event type, object) pairs for a client watch; see WatchClustersRequest. The watch
        counts against its identity's open watches until it ends."""
        self._admit()
        if self.watch_quota is None:
            async for event in self._watch(tenant_id, label_selector, resource_version, matches):
                yield event
            return
        with self.watch_quota.hold(current_identity.get()):
            async for event in self._watch(tenant_id, label_selector, resource_version, matches):
                yield event

    async def _watch(
        self,
        tenant_id: str,
        label_selector: str,
        resource_version: str,
        matches: Callable[[R], bool] | None,
    ) -> AsyncIterator[tuple[int, R]]:
        tenant = _tenant(tenant_id, "tenant_id", collection=True)
        selector = _selector(label_selector)
        after = parse_resource_version(resource_version, "resource_version")
        assert self.hub is not None, "this kind is not watchable"
        if after is not None and after > self.hub.revision and after > await self.registry.store.current_revision():
            # No List, event or bookmark ever handed this out: the watch would wait forever.
            raise errors.invalid_field(
                "resource_version", f"{after} is newer than the storage's latest revision: not a resource version"
            )

        def selected(obj: R | None) -> bool:
            return obj is not None and selector.matches(obj.metadata.labels) and (matches is None or matches(obj))

        position = after or 0
        if after is None:
            # Initial state: everything that exists now, then a bookmark, then changes.
            token = ""
            while True:
                page = await self.registry.list(tenant, selector, 0, token, matches)
                position = page.revision
                for obj in page.items:
                    yield ADDED, obj
                token = page.continue_token
                if not token:
                    break
            yield BOOKMARK, self._bookmark(position)

        last_bookmark = time.monotonic()
        try:
            async for message in self.hub.subscribe(self.registry.tenant_prefix(tenant), position):
                if isinstance(message, Change):
                    position = message.revision
                    event = self._event(message, selected)
                    if event is not None:
                        yield event
                else:
                    position = max(position, message)
                if time.monotonic() - last_bookmark >= self.bookmark_interval:
                    last_bookmark = time.monotonic()
                    yield BOOKMARK, self._bookmark(position)
        except Closed as closed:
            if closed.error is not None:
                raise closed.error from None
            # The server is stopping: tell the client where to resume, then end cleanly.
            yield BOOKMARK, self._bookmark(position)

    def _event(self, change: Change[R], selected: Callable[[R | None], bool]) -> tuple[int, R] | None:
        now = not change.deleted and selected(change.obj)
        before = change.prev is not None and selected(change.prev)
        if change.deleted:
            return (DELETED, change.obj) if before else None
        if now:
            return (MODIFIED if before else ADDED), change.obj
        return (DELETED, change.obj) if before else None

    def _bookmark(self, revision: int) -> R:
        obj = self.registry.kind.message()
        obj.metadata.resource_version = str(revision)
        return obj
