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
from typing import Any, Generic, cast

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from tke.internal.apiserver.api import ResourceAPI
from tke.internal.apiserver.kubeconfigs import KubeconfigIssuer
from tke.internal.apiserver.registry import R, varint
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
Handlers = dict[str, "grpc.RpcMethodHandler[Any, Any]"]


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


def _passing_bytes(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    """A response serializer that sends bytes as they are: the message, serialized already."""
    assert serialize is not None, "generated handlers name their serializer"

    def serializer(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return serializer


class _Recorder:
    """Stands in for the server while a generated add_*_to_server names its method handlers."""

    def __init__(self) -> None:
        self.handlers: Handlers = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: Handlers) -> None:
        self.handlers = handlers


# The wire format written by hand: field 1 of a List response is its ListMeta, field 2 its items
# (registry.OBJECT_TAG); a watch event is `type` (1) and `object` (2), a batch its events (1)
# (api.py). Checked at import for every kind, so that a proto change fails loudly.
_LIST_METADATA = b"\x0a"


def _check_wire_layout(service: Service[Any]) -> None:
    assert service.list_message is not None and service.event_message is not None
    fields = service.list_message.DESCRIPTOR.fields_by_name
    assert fields["metadata"].number == 1 and fields["items"].number == 2, service.name
    fields = service.event_message.DESCRIPTOR.fields_by_name
    assert fields["type"].number == 1 and fields["object"].number == 2, service.name
    batch = service.event_message.DESCRIPTOR.file.message_types_by_name[service.event_message.DESCRIPTOR.name + "Batch"]
    assert batch.fields_by_name["events"].number == 1, service.name


for _service in (CLUSTERS, MACHINES, EVENTS):
    _check_wire_layout(_service)


def _framed_message(message: Message) -> bytes:
    body = message.SerializeToString()
    return varint(len(body)) + body


class ResourceService(Generic[R]):
    """The servicer of one kind: `service` says how its requests look, `api` does the work.

    Its handlers may answer with bytes, the response serialized already: Get and List send the
    stored bytes of the objects (registry.py: `wire`, `framed`), so that a read decodes and
    encodes nothing."""

    def __init__(self, service: Service[R], api: ResourceAPI[R]) -> None:
        self.service = service
        self.api = api

    def add_to(self, server: grpc.aio.Server) -> None:
        recorder = _Recorder()
        self.service.add_to_server(self, cast(grpc.aio.Server, recorder))
        handlers = {
            name: handler._replace(  # type: ignore[attr-defined]
                response_serializer=_passing_bytes(handler.response_serializer)
            )
            for name, handler in recorder.handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(self.service.name, handlers),))
        server.add_registered_method_handlers(self.service.name, handlers)

    def _object(self, request: Any) -> R:
        obj: R = getattr(request, self.service.field)
        return obj

    async def Create(self, request: Any, context: Context) -> R:
        # An absent object is refused by the API (a required field), not created empty.
        return await self.api.create(self._object(request) if request.HasField(self.service.field) else None)

    async def Get(self, request: Any, context: Context) -> bytes:
        return await self.api.get_wire(request.name, request.tenant_id)

    async def List(self, request: Any, context: Context) -> bytes:
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
            wire=True,
        )
        meta = meta_pb2.ListMeta(resource_version=str(page.revision), continue_token=page.continue_token)
        assert page.framed is not None
        return b"".join([_LIST_METADATA, _framed_message(meta), *page.framed])

    async def Update(self, request: Any, context: Context) -> R:
        # A kind whose Update has no update_mask (events) is always replaced whole.
        has_mask = "update_mask" in request.DESCRIPTOR.fields_by_name
        mask = request.update_mask if has_mask else field_mask_pb2.FieldMask()
        return await self.api.update(self._object(request), mask)

    async def UpdateStatus(self, request: Any, context: Context) -> R:
        return await self.api.update_status(self._object(request))

    async def Delete(self, request: Any, context: Context) -> R:
        return await self.api.delete(request.name, request.tenant_id, request.resource_version)

    def Watch(self, request: Any, context: Context) -> AsyncIterator[bytes]:
        # Each event serialized once for every watcher that gets it (api.py).
        return self.api.watch(
            request.tenant_id, request.label_selector, request.resource_version, self.service.filter(request)
        )

    def WatchBatches(self, request: Any, context: Context) -> AsyncIterator[bytes]:
        return self.api.watch(
            request.tenant_id,
            request.label_selector,
            request.resource_version,
            self.service.filter(request),
            batched=True,
        )


class ClusterServicer(ResourceService[cluster_pb2.Cluster]):
    """ClusterService: the resource methods, and kubeconfigs for the clusters' users."""

    def __init__(self, api: ResourceAPI[cluster_pb2.Cluster], kubeconfigs: KubeconfigIssuer) -> None:
        super().__init__(CLUSTERS, api)
        self.kubeconfigs = kubeconfigs

    async def GetKubeconfig(
        self, request: cluster_pb2.GetKubeconfigRequest, context: Context
    ) -> cluster_pb2.GetKubeconfigResponse:
        return await self.kubeconfigs.issue(request)
