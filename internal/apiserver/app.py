"""tke-apiserver: its configuration, and the wiring of storage, watch hubs, services and the
interceptor chain into a running server."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tke.internal import metrics
from tke.internal.apiserver.admission import with_provider_validation
from tke.internal.apiserver.api import ResourceAPI
from tke.internal.apiserver.event_service import DEFAULT_EVENT_TTL, EventService, event_store
from tke.internal.apiserver.kinds import CLUSTERS, EVENTS, machine_kind
from tke.internal.apiserver.registry import Registry
from tke.internal.apiserver.services import ClusterService, MachineService
from tke.internal.apiserver.watch import Hub
from tke.internal.auth.chain import AuthChain, AuthConfig, PluginContext, build
from tke.internal.rpc.interceptors import RequestInterceptor
from tke.internal.rpc.metrics import MetricsInterceptor
from tke.internal.rpc.server import ListenConfig, RunningServer, ServerSpec, start_server
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.store import Store
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc, event_pb2, event_pb2_grpc, machine_pb2, machine_pb2_grpc

log = logging.getLogger("tke.apiserver")


@dataclass(frozen=True)
class WatchConfig:
    # Seconds between BOOKMARK events on an idle watch.
    bookmark_interval: float = 10.0
    # Recent changes kept per kind, so that watches resuming from a recent revision are
    # served without touching etcd.
    window: int = 10_000
    # Changes a single watch client may fall behind before it is ended (RESOURCE_EXHAUSTED).
    client_queue: int = 1_000
    # Seconds between progress requests to etcd (advance bookmarks on quiet kinds).
    progress_interval: float = 5.0


@dataclass(frozen=True)
class ApiserverConfig:
    listen: ListenConfig = field(default_factory=ListenConfig)
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    # Seconds in-flight calls get to finish on shutdown.
    shutdown_grace: float = 5.0
    log_level: str = "info"
    # "console" (readable) or "json" (one object per line, with the request id).
    log_format: str = "console"
    # Prometheus metrics at http://<address>/metrics; empty disables.
    metrics_address: str = "127.0.0.1:9464"
    # Seconds an event lives after its last occurrence (an etcd lease); 0 keeps events forever.
    event_ttl: float = DEFAULT_EVENT_TTL


class Apiserver:
    """A running tke-apiserver."""

    def __init__(self, config: ApiserverConfig, store: Store | None = None) -> None:
        self.config = config
        self.store: Store = store if store is not None else EtcdStore(config.etcd)
        self.prefix = config.etcd.prefix.rstrip("/")
        # Providers also check their part of a spec, so that what they cannot build is refused
        # before it is stored.
        self.clusters = Registry(with_provider_validation(CLUSTERS, "tke.cluster_providers"), self.store, self.prefix)
        self.machines = Registry(
            with_provider_validation(machine_kind(self.clusters), "tke.machine_providers"), self.store, self.prefix
        )
        w = config.watch
        self.cluster_hub: Hub[cluster_pb2.Cluster] = Hub(
            self.store, self.clusters.root, self.clusters.decode,
            window=w.window, queue_size=w.client_queue, progress_interval=w.progress_interval,
        )  # fmt: skip
        self.machine_hub: Hub[machine_pb2.Machine] = Hub(
            self.store, self.machines.root, self.machines.decode,
            window=w.window, queue_size=w.client_queue, progress_interval=w.progress_interval,
        )  # fmt: skip
        self.events = Registry(EVENTS, event_store(self.store, config.event_ttl), self.prefix)
        self.event_hub: Hub[event_pb2.Event] = Hub(
            self.store, self.events.root, self.events.decode,
            window=w.window, queue_size=w.client_queue, progress_interval=w.progress_interval,
        )  # fmt: skip
        self.server: RunningServer | None = None

    async def start(self) -> RunningServer:
        self.auth: AuthChain = build(self.config.auth, PluginContext(self.store, self.prefix))
        await self.auth.start()
        await asyncio.gather(self.cluster_hub.start(), self.machine_hub.start(), self.event_hub.start())
        bookmark = self.config.watch.bookmark_interval
        cluster_api = ResourceAPI(self.clusters, self.cluster_hub, bookmark)
        machine_api = ResourceAPI(self.machines, self.machine_hub, bookmark)
        event_api = ResourceAPI(self.events, self.event_hub, bookmark)

        def register(server: grpc.aio.Server) -> None:
            cluster_pb2_grpc.add_ClusterServiceServicer_to_server(ClusterService(cluster_api), server)
            machine_pb2_grpc.add_MachineServiceServicer_to_server(MachineService(machine_api), server)
            event_pb2_grpc.add_EventServiceServicer_to_server(EventService(event_api), server)
            for _, add in self.auth.services:
                add(server)

        spec = ServerSpec(
            register=register,
            services=[
                cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
                machine_pb2.DESCRIPTOR.services_by_name["MachineService"].full_name,
                event_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
                *(name for name, _ in self.auth.services),
            ],
            interceptors=[RequestInterceptor(), MetricsInterceptor(), *self.auth.interceptors],
            on_stop=[self.cluster_hub.stop, self.machine_hub.stop, self.event_hub.stop],
        )
        self.server = await start_server(self.config.listen, spec)
        return self.server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(self.config.shutdown_grace)
            await self.auth.stop()
        await self.store.close()


async def serve(config: ApiserverConfig) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully."""
    apiserver = Apiserver(config)
    server = await apiserver.start()
    metrics.serve(config.metrics_address)
    listen = config.listen
    where = [f"tcp {listen.address} (port {server.port})"] if listen.address else []
    if listen.unix_socket:
        where.append(f"unix {Path(listen.unix_socket)}")
    log.info("tke-apiserver serving on %s; etcd %s", ", ".join(where), ",".join(config.etcd.endpoints))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await apiserver.stop()
