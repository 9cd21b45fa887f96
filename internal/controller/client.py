"""The controllers' view of the apiserver: one small typed client per kind over gRPC, so that
informers and controllers never touch etcd.

The controller authenticates like any client: a bearer token in the call metadata. gRPC errors
surface as grpc.aio.AioRpcError; `code_of` reads their code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import grpc

from tke.internal.meta.resource import Resource
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc, event_pb2, event_pb2_grpc, machine_pb2, machine_pb2_grpc

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


class _Base:
    kind = ""

    def __init__(self, channel: grpc.aio.Channel, token: str = "", timeout: float = 10.0) -> None:
        # Metadata rather than call credentials: those need a secure channel, and a loopback
        # or unix-socket apiserver may serve plaintext.
        self.metadata: Sequence[tuple[str, str]] = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.channel = channel

    def _kw(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "timeout": self.timeout}


class ClusterClient(_Base):
    kind = "Cluster"

    def __init__(self, channel: grpc.aio.Channel, token: str = "", timeout: float = 10.0) -> None:
        super().__init__(channel, token, timeout)
        self.stub = cluster_pb2_grpc.ClusterServiceStub(channel)

    async def list(self, continue_token: str = "", page_size: int = 500) -> Page[cluster_pb2.Cluster]:
        request = cluster_pb2.ListClustersRequest(tenant_id="*", page_size=page_size, continue_token=continue_token)
        out = await self.stub.List(request, **self._kw())
        return Page(list(out.items), out.metadata.resource_version, out.metadata.continue_token)

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[int, cluster_pb2.Cluster]]:
        request = cluster_pb2.WatchClustersRequest(tenant_id="*", resource_version=resource_version)
        async for event in self.stub.Watch(request, metadata=self.metadata):
            yield event.type, event.object

    async def get(self, tenant: str, name: str) -> cluster_pb2.Cluster:
        result: cluster_pb2.Cluster = await self.stub.Get(
            cluster_pb2.GetClusterRequest(name=name, tenant_id=tenant), **self._kw()
        )
        return result

    async def update(self, obj: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
        result: cluster_pb2.Cluster = await self.stub.Update(
            cluster_pb2.UpdateClusterRequest(cluster=obj), **self._kw()
        )
        return result

    async def update_status(self, obj: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
        result: cluster_pb2.Cluster = await self.stub.UpdateStatus(
            cluster_pb2.UpdateClusterStatusRequest(cluster=obj), **self._kw()
        )
        return result

    async def delete(self, tenant: str, name: str) -> cluster_pb2.Cluster:
        result: cluster_pb2.Cluster = await self.stub.Delete(
            cluster_pb2.DeleteClusterRequest(name=name, tenant_id=tenant), **self._kw()
        )
        return result


class MachineClient(_Base):
    kind = "Machine"

    def __init__(self, channel: grpc.aio.Channel, token: str = "", timeout: float = 10.0) -> None:
        super().__init__(channel, token, timeout)
        self.stub = machine_pb2_grpc.MachineServiceStub(channel)

    async def list(self, continue_token: str = "", page_size: int = 500) -> Page[machine_pb2.Machine]:
        request = machine_pb2.ListMachinesRequest(tenant_id="*", page_size=page_size, continue_token=continue_token)
        out = await self.stub.List(request, **self._kw())
        return Page(list(out.items), out.metadata.resource_version, out.metadata.continue_token)

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[int, machine_pb2.Machine]]:
        request = machine_pb2.WatchMachinesRequest(tenant_id="*", resource_version=resource_version)
        async for event in self.stub.Watch(request, metadata=self.metadata):
            yield event.type, event.object

    async def get(self, tenant: str, name: str) -> machine_pb2.Machine:
        result: machine_pb2.Machine = await self.stub.Get(
            machine_pb2.GetMachineRequest(name=name, tenant_id=tenant), **self._kw()
        )
        return result

    async def update(self, obj: machine_pb2.Machine) -> machine_pb2.Machine:
        result: machine_pb2.Machine = await self.stub.Update(
            machine_pb2.UpdateMachineRequest(machine=obj), **self._kw()
        )
        return result

    async def update_status(self, obj: machine_pb2.Machine) -> machine_pb2.Machine:
        result: machine_pb2.Machine = await self.stub.UpdateStatus(
            machine_pb2.UpdateMachineStatusRequest(machine=obj), **self._kw()
        )
        return result

    async def delete(self, tenant: str, name: str) -> machine_pb2.Machine:
        result: machine_pb2.Machine = await self.stub.Delete(
            machine_pb2.DeleteMachineRequest(name=name, tenant_id=tenant), **self._kw()
        )
        return result


class EventClient(_Base):
    """Create and count events (see events.py)."""

    def __init__(self, channel: grpc.aio.Channel, token: str = "", timeout: float = 10.0) -> None:
        super().__init__(channel, token, timeout)
        self.stub = event_pb2_grpc.EventServiceStub(channel)

    async def create(self, event: event_pb2.Event) -> event_pb2.Event:
        result: event_pb2.Event = await self.stub.Create(event_pb2.CreateEventRequest(event=event), **self._kw())
        return result

    async def update(self, event: event_pb2.Event) -> event_pb2.Event:
        result: event_pb2.Event = await self.stub.Update(event_pb2.UpdateEventRequest(event=event), **self._kw())
        return result

    async def get(self, tenant: str, name: str) -> event_pb2.Event:
        result: event_pb2.Event = await self.stub.Get(
            event_pb2.GetEventRequest(name=name, tenant_id=tenant), **self._kw()
        )
        return result
