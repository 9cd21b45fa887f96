"""The controllers' view of the apiserver: one typed client per kind over gRPC, so that
informers and controllers never touch etcd.

The kinds' services differ only in their stub and request messages; `KindService` tables
them (CLUSTERS, MACHINES, EVENTS) and `ApiClient` calls any of them. The controller
authenticates like any client: a bearer token in the call metadata. gRPC errors surface as
grpc.aio.AioRpcError; `code_of` reads their code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from tke.internal.meta.resource import Resource
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

R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class ApiserverConfig:
    """How the controller reaches tke-apiserver."""

    # host:port, or unix:PATH for a local socket.
    address: str = "127.0.0.1:50051"
    # Bearer token of the controller's identity (a platform administrator), read from this
    # environment variable; empty sends no token (an apiserver with authentication off).
    token_env: str = "TKE_CONTROLLER_TOKEN"
    # CA certificate of an apiserver serving TLS; empty means plaintext (loopback only).
    ca_file: str = ""
    # Client certificate and key for mutual TLS, when the apiserver asks for one.
    cert_file: str = ""
    key_file: str = ""
    # Deadline of each unary call, seconds.
    timeout: float = 10.0


@dataclass(frozen=True)
class Page(Generic[R]):
    items: list[R]
    resource_version: str
    continue_token: str


class ResourceClient(Protocol[R]):
    """What an informer and a controller need of one kind."""

    kind: str

    async def list(self, continue_token: str = "", page_size: int = 500) -> Page[R]: ...
    def watch(self, resource_version: str) -> AsyncIterator[tuple[int, R]]: ...
    async def get(self, tenant: str, name: str) -> R: ...
    async def update(self, obj: R) -> R: ...
    async def update_status(self, obj: R) -> R: ...
    async def delete(self, tenant: str, name: str) -> R: ...


@dataclass(frozen=True)
class KindService(Generic[R]):
    """How one kind's service is called: its stub and the request message of each method.
    A method the service does not have (events have no UpdateStatus or Delete, credentials
    no List, Watch or Update) is None."""

    kind: str  # "Cluster"
    stub: Callable[[grpc.aio.Channel], Any]
    field: str  # the field of Create/Update/UpdateStatus requests that carries the object
    create: type[Message]
    get: type[Message]
    list: type[Message] | None = None
    watch: type[Message] | None = None
    update: type[Message] | None = None
    update_status: type[Message] | None = None
    delete: type[Message] | None = None


CLUSTERS: KindService[cluster_pb2.Cluster] = KindService(
    kind="Cluster",
    stub=cluster_pb2_grpc.ClusterServiceStub,
    field="cluster",
    create=cluster_pb2.CreateClusterRequest,
    get=cluster_pb2.GetClusterRequest,
    list=cluster_pb2.ListClustersRequest,
    watch=cluster_pb2.WatchClustersRequest,
    update=cluster_pb2.UpdateClusterRequest,
    update_status=cluster_pb2.UpdateClusterStatusRequest,
    delete=cluster_pb2.DeleteClusterRequest,
)
MACHINES: KindService[machine_pb2.Machine] = KindService(
    kind="Machine",
    stub=machine_pb2_grpc.MachineServiceStub,
    field="machine",
    create=machine_pb2.CreateMachineRequest,
    get=machine_pb2.GetMachineRequest,
    list=machine_pb2.ListMachinesRequest,
    watch=machine_pb2.WatchMachinesRequest,
    update=machine_pb2.UpdateMachineRequest,
    update_status=machine_pb2.UpdateMachineStatusRequest,
    delete=machine_pb2.DeleteMachineRequest,
)
EVENTS: KindService[event_pb2.Event] = KindService(
    kind="Event",
    stub=event_pb2_grpc.EventServiceStub,
    field="event",
    create=event_pb2.CreateEventRequest,
    get=event_pb2.GetEventRequest,
    list=event_pb2.ListEventsRequest,
    watch=event_pb2.WatchEventsRequest,
    update=event_pb2.UpdateEventRequest,
)
CREDENTIALS: KindService[credential_pb2.ClusterCredential] = KindService(
    kind="ClusterCredential",
    stub=credential_pb2_grpc.ClusterCredentialServiceStub,
    field="cluster_credential",
    create=credential_pb2.CreateClusterCredentialRequest,
    get=credential_pb2.GetClusterCredentialRequest,
    delete=credential_pb2.DeleteClusterCredentialRequest,
)


def code_of(err: BaseException) -> grpc.StatusCode | None:
    return err.code() if isinstance(err, grpc.aio.AioRpcError) else None


def open_channel(config: ApiserverConfig) -> grpc.aio.Channel:
    options = [("grpc.keepalive_time_ms", 20_000), ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if config.ca_file:
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(config.ca_file).read_bytes(),
            private_key=Path(config.key_file).read_bytes() if config.key_file else None,
            certificate_chain=Path(config.cert_file).read_bytes() if config.cert_file else None,
        )
        return grpc.aio.secure_channel(config.address, creds, options=options)
    return grpc.aio.insecure_channel(config.address, options=options)


class ApiClient(Generic[R]):
    """One kind's service on the apiserver (a ResourceClient of that kind). Lists and watches
    span every tenant: the controllers act for the platform."""

    def __init__(self, service: KindService[R], channel: grpc.aio.Channel, token: str = "", timeout: float = 10.0):
        self.service = service
        self.kind = service.kind
        self.channel = channel
        self.stub = service.stub(channel)
        # Metadata rather than call credentials: those need a secure channel, and a loopback
        # or unix-socket apiserver may serve plaintext.
        self.metadata: Sequence[tuple[str, str]] = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    async def _call(self, method: str, request: Message) -> Any:
        return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=self.timeout)

    def _carrying(self, request: type[Message] | None, method: str, obj: R) -> Message:
        if request is None:
            raise NotImplementedError(f"the {self.kind} service has no {method}")
        return request(**{self.service.field: obj})

    async def create(self, obj: R) -> R:
        created: R = await self._call("Create", self._carrying(self.service.create, "Create", obj))
        return created

    async def get(self, tenant: str, name: str) -> R:
        got: R = await self._call("Get", self.service.get(name=name, tenant_id=tenant))
        return got

    async def list(self, continue_token: str = "", page_size: int = 500) -> Page[R]:
        if self.service.list is None:
            raise NotImplementedError(f"the {self.kind} service has no List")
        request = self.service.list(tenant_id="*", page_size=page_size, continue_token=continue_token)
        out = await self._call("List", request)
        return Page(list(out.items), out.metadata.resource_version, out.metadata.continue_token)

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[int, R]]:
        if self.service.watch is None:
            raise NotImplementedError(f"the {self.kind} service has no Watch")
        request = self.service.watch(tenant_id="*", resource_version=resource_version)
        # No deadline: a watch lasts until the apiserver or the caller ends it. WatchBatches:
        # the events that are ready come in one message, so a busy kind costs fewer messages.
        async for batch in self.stub.WatchBatches(request, metadata=self.metadata):
            for event in batch.events:
                yield event.type, event.object

    async def update(self, obj: R) -> R:
        updated: R = await self._call("Update", self._carrying(self.service.update, "Update", obj))
        return updated

    async def update_status(self, obj: R) -> R:
        request = self._carrying(self.service.update_status, "UpdateStatus", obj)
        updated: R = await self._call("UpdateStatus", request)
        return updated

    async def delete(self, tenant: str, name: str) -> R:
        if self.service.delete is None:
            raise NotImplementedError(f"the {self.kind} service has no Delete")
        deleted: R = await self._call("Delete", self.service.delete(name=name, tenant_id=tenant))
        return deleted
