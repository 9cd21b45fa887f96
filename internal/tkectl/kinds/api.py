"""Kinds stored by the apiserver with the common resource shape (metadata, spec, status) and a
service of Create/Get/List/Update/Delete/Watch calls: clusters, machines, events, roles and role
bindings. One adaptor, configured per kind with its stub, method and request names."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from tke.internal.tkectl.connection import APISERVER, Connection
from tke.internal.tkectl.errors import from_rpc
from tke.internal.tkectl.kinds.base import Kind, Query, WatchEvent

PAGE_SIZE = 500
_EVENT_TYPES = {1: "ADDED", 2: "MODIFIED", 3: "DELETED"}


class ApiKind(Kind):
    server = APISERVER
    stub: Callable[[Any], Any]
    field: str  # the request field holding the object: "cluster", "role_binding"
    methods: dict[str, str]  # verb -> RPC name; a missing verb is unsupported
    requests: dict[str, type[Message]]  # verb -> request message
    filter_fields: dict[str, str] = {}  # Query.filters key -> request field of list and watch
    update_has_mask: bool = True

    @property
    def editable(self) -> bool:  # type: ignore[override]
        return "update" in self.methods

    def _method(self, conn: Connection, verb: str) -> Any:
        if verb not in self.methods:
            raise self.unsupported(verb)
        return getattr(self.stub(conn.channel(self.server)), self.methods[verb])

    async def get(self, conn: Connection, name: str, tenant: str) -> Message:
        method = self._method(conn, "get")
        result: Message = await self.call(conn, method, self.requests["get"](name=name, tenant_id=tenant))
        return result

    async def list(self, conn: Connection, query: Query) -> Sequence[Message]:
        method = self._method(conn, "list")
        items: list[Message] = []
        token = ""
        while True:
            request = self.requests["list"](
                tenant_id=query.tenant, label_selector=query.selector, page_size=PAGE_SIZE, continue_token=token
            )
            self._filter(request, query)
            page = await self.call(conn, method, request)
            items += page.items
            token = page.metadata.continue_token
            if not token:
                return items

    async def create(self, conn: Connection, obj: Message, extra: dict[str, Any]) -> Message:
        method = self._method(conn, "create")
        result: Message = await self.call(conn, method, self.requests["create"](**{self.field: obj}))
        return result

    async def update(self, conn: Connection, obj: Message, paths: Sequence[str]) -> Message:
        method = self._method(conn, "update")
        request = self.requests["update"](**{self.field: obj})
        if self.update_has_mask and paths:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(paths)))  # type: ignore[attr-defined]
        result: Message = await self.call(conn, method, request)
        return result

    async def delete(self, conn: Connection, name: str, tenant: str, resource_version: str) -> Message | None:
        method = self._method(conn, "delete")
        request = self.requests["delete"](name=name, tenant_id=tenant, resource_version=resource_version)
        result: Message = await self.call(conn, method, request)
        return result

    async def watch(self, conn: Connection, query: Query, resource_version: str) -> AsyncIterator[WatchEvent]:
        method = self._method(conn, "watch")
        request = self.requests["watch"](
            tenant_id=query.tenant, label_selector=query.selector, resource_version=resource_version
        )
        self._filter(request, query)
        stream = method(request, metadata=conn.metadata(self.server))
        batched = self.methods["watch"] == "WatchBatches"  # each message: the events that were ready
        try:
            async for message in stream:
                for event in message.events if batched else (message,):
                    # BOOKMARK: nothing changed; only metadata.resource_version, to resume from.
                    yield WatchEvent(_EVENT_TYPES.get(event.type, "BOOKMARK"), event.object)
        except Exception as err:
            if hasattr(err, "code") and hasattr(err, "details"):
                raise from_rpc(err, conn.target(self.server)) from None
            raise
        finally:
            stream.cancel()

    def _filter(self, request: Any, query: Query) -> None:
        for key, value in query.filters.items():
            if key in self.filter_fields and value:
                setattr(request, self.filter_fields[key], value)
