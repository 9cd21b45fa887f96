"""The gRPC services of tke.platform.v1: one servicer, `ResourceService`, that translates
request messages into calls of a kind's shared ResourceAPI, and a table per kind (CLUSTERS,
MACHINES, EVENTS, CREDENTIALS) of what differs between the kinds' services; ClusterService
adds GetKubeconfig (`ClusterServicer`, kubeconfigs.py).

Every service's requests look alike: Create, Update and UpdateStatus carry the object in the
field named after the kind; Get and Delete name it; List and Watch take a tenant, a label
selector and a resource version, and some kinds add a filter of their own (machines of one
cluster, events about one object). A method a kind's service does not declare (events have no
UpdateStatus or Delete) is never routed to the servicer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from tke.internal.apiserver.api import ResourceAPI
from tke.internal.apiserver.kubeconfigs import KubeconfigIssuer
from tke.internal.apiserver.registry import R
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    credential_pb2,
    credential_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    machine_pb2,
    machine_pb2_grpc,
)

Filter = Callable[[R], bool]
Context = grpc.aio.ServicerContext[Any, Any]


def _no_filter(request: Any) -> None:
    return None


@dataclass(frozen=True)
class Service(Generic[R]):
    """One kind's gRPC service."""

    name: str  # full name, for health and reflection
    # The generated add_<Kind>ServiceServicer_to_server: it routes each method the service
    # declares to the servicer's method of that name.
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    field: str  # the request field that carries the object: "cluster"
    # ClusterList and ClusterEvent; None for a kind without List and Watch.
    list_message: type[Message] | None = None
    event_message: type[Message] | None = None
    # The kind's own List and Watch filter, read from the request; None: everything selected.
    filter: Callable[[Any], Filter[R] | None] = _no_filter


def _of_cluster(
    request: machine_pb2.ListMachinesRequest | machine_pb2.WatchMachinesRequest,
) -> Filter[machine_pb2.Machine] | None:
    cluster = request.cluster_name
    return (lambda m: m.spec.cluster_name == cluster) if cluster else None


def _about(request: event_pb2.ListEventsRequest | event_pb2.WatchEventsRequest) -> Filter[event_pb2.Event] | None:
    kind, name = request.involved_object_kind, request.involved_object_name
    if not kind and not name:
        return None

    def matches(event: event_pb2.Event) -> bool:
        ref = event.spec.involved_object
        return (not kind or ref.kind == kind) and (not name or ref.name == name)

    return matches


CLUSTERS: Service[cluster_pb2.Cluster] = Service(
    name=cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
    add_to_server=cluster_pb2_grpc.add_ClusterServiceServicer_to_server,
    field="cluster",
    list_message=cluster_pb2.ClusterList,
    event_message=cluster_pb2.ClusterEvent,
)
MACHINES: Service[machine_pb2.Machine] = Service(
    name=machine_pb2.DESCRIPTOR.services_by_name["MachineService"].full_name,
    add_to_server=machine_pb2_grpc.add_MachineServiceServicer_to_server,
    field="machine",
    list_message=machine_pb2.MachineList,
    event_message=machine_pb2.MachineEvent,
    filter=_of_cluster,
)
EVENTS: Service[event_pb2.Event] = Service(
    name=event_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    add_to_server=event_pb2_grpc.add_EventServiceServicer_to_server,
    field="event",
    list_message=event_pb2.EventList,
    event_message=event_pb2.EventEvent,
    filter=_about,
)


# Create, Get and Delete only: credentials are never listed, watched or replaced.
CREDENTIALS: Service[credential_pb2.ClusterCredential] = Service(
    name=credential_pb2.DESCRIPTOR.services_by_name["ClusterCredentialService"].full_name,
    add_to_server=credential_pb2_grpc.add_ClusterCredentialServiceServicer_to_server,
    field="cluster_credential",
)


class ResourceService(Generic[R]):
    """The servicer of one kind: `service` says how its requests look, `api` does the work."""

    def __init__(self, service: Service[R], api: ResourceAPI[R]) -> None:
        self.service = service
        self.api = api

    def add_to(self, server: grpc.aio.Server) -> None:
        self.service.add_to_server(self, server)

    def _object(self, request: Any) -> R:
        obj: R = getattr(request, self.service.field)
        return obj

    async def Create(self, request: Any, context: Context) -> R:
        # An absent object is refused by the API (a required field), not created empty.
        return await self.api.create(self._object(request) if request.HasField(self.service.field) else None)

    async def Get(self, request: Any, context: Context) -> R:
        return await self.api.get(request.name, request.tenant_id)

    async def List(self, request: Any, context: Context) -> Message:
        # What the request asks for besides its continue token: a token is only valid with it.
        query = type(request)()
        query.CopyFrom(request)
        query.ClearField("continue_token")
        page = await self.api.list(
            request.tenant_id,
            request.label_selector,
            request.page_size,
            request.continue_token,
            self.service.filter(request),
            filters=query.SerializeToString(deterministic=True),
        )
        meta = meta_pb2.ListMeta(resource_version=str(page.revision), continue_token=page.continue_token)
        assert self.service.list_message is not None, "List is only routed to kinds that declare it"
        return self.service.list_message(items=page.items, metadata=meta)

    async def Update(self, request: Any, context: Context) -> R:
        # A kind whose Update has no update_mask (events) is always replaced whole.
        has_mask = "update_mask" in request.DESCRIPTOR.fields_by_name
        mask = request.update_mask if has_mask else field_mask_pb2.FieldMask()
        return await self.api.update(self._object(request), mask)

    async def UpdateStatus(self, request: Any, context: Context) -> R:
        return await self.api.update_status(self._object(request))

    async def Delete(self, request: Any, context: Context) -> R:
        return await self.api.delete(request.name, request.tenant_id, request.resource_version)

    async def Watch(self, request: Any, context: Context) -> AsyncIterator[Message]:
        events = self.api.watch(
            request.tenant_id, request.label_selector, request.resource_version, self.service.filter(request)
        )
        assert self.service.event_message is not None, "Watch is only routed to kinds that declare it"
        async for kind, obj in events:
            yield self.service.event_message(type=kind, object=obj)


class ClusterServicer(ResourceService[cluster_pb2.Cluster]):
    """ClusterService: the resource methods, and kubeconfigs for the clusters' users."""

    def __init__(self, api: ResourceAPI[cluster_pb2.Cluster], kubeconfigs: KubeconfigIssuer) -> None:
        super().__init__(CLUSTERS, api)
        self.kubeconfigs = kubeconfigs

    async def GetKubeconfig(
        self, request: cluster_pb2.GetKubeconfigRequest, context: Context
    ) -> cluster_pb2.GetKubeconfigResponse:
        return await self.kubeconfigs.issue(request)
