"""The EventService servicer: events through the shared ResourceAPI, like clusters and
machines, with filters on the object an event is about."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf import field_mask_pb2

from tke.internal.apiserver.api import ResourceAPI
from tke.internal.storage.lease import LeasedStore
from tke.internal.storage.store import Store
from tke.internal.storage.ttl import ExpiringStore
from tke.platform.v1 import event_pb2, event_pb2_grpc

DEFAULT_EVENT_TTL = 3600.0


def event_store(store: Store, ttl: float) -> Store:
    """Where events go: `store` with every write bound to a lease of `ttl` seconds, when the
    store has leases (etcd and the memory fake do); 0 keeps events forever."""
    if ttl > 0 and isinstance(store, LeasedStore):
        return ExpiringStore(store, ttl)
    return store


def _about(kind: str, name: str) -> Callable[[event_pb2.Event], bool] | None:
    if not kind and not name:
        return None

    def matches(event: event_pb2.Event) -> bool:
        ref = event.spec.involved_object
        return (not kind or ref.kind == kind) and (not name or ref.name == name)

    return matches


class EventService(event_pb2_grpc.EventServiceServicer):
    def __init__(self, api: ResourceAPI[event_pb2.Event]) -> None:
        self.api = api

    async def Create(self, request: event_pb2.CreateEventRequest, context: Any) -> event_pb2.Event:
        return await self.api.create(request.event if request.HasField("event") else None)

    async def Get(self, request: event_pb2.GetEventRequest, context: Any) -> event_pb2.Event:
        return await self.api.get(request.name, request.tenant_id)

    async def Update(self, request: event_pb2.UpdateEventRequest, context: Any) -> event_pb2.Event:
        return await self.api.update(request.event, field_mask_pb2.FieldMask())

    async def List(self, request: event_pb2.ListEventsRequest, context: Any) -> event_pb2.EventList:
        page = await self.api.list(
            request.tenant_id,
            request.label_selector,
            request.page_size,
            request.continue_token,
            _about(request.involved_object_kind, request.involved_object_name),
        )
        out = event_pb2.EventList(items=page.items)
        out.metadata.resource_version = str(page.revision)
        out.metadata.continue_token = page.continue_token
        return out

    async def Watch(self, request: event_pb2.WatchEventsRequest, context: Any) -> AsyncIterator[event_pb2.EventEvent]:
        events = self.api.watch(
            request.tenant_id,
            request.label_selector,
            request.resource_version,
            _about(request.involved_object_kind, request.involved_object_name),
        )
        async for kind, obj in events:
            yield event_pb2.EventEvent(type=kind, object=obj)  # type: ignore[arg-type]
