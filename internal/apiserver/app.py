"""tke-apiserver: its configuration, and the wiring of storage, watch hubs, services and the
interceptor chain into a running server."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tke.internal import metrics
from tke.internal.apiserver import services
from tke.internal.apiserver.admission import with_provider_validation
from tke.internal.apiserver.api import ResourceAPI
from tke.internal.apiserver.event_store import DEFAULT_EVENT_TTL, event_store
from tke.internal.apiserver.kinds import CLUSTERS, CREDENTIALS, EVENTS, machine_kind
from tke.internal.apiserver.kubeconfigs import KubeconfigConfig, KubeconfigIssuer
from tke.internal.apiserver.registry import R, Registry
from tke.internal.apiserver.services import ClusterServicer, ResourceService
from tke.internal.apiserver.watch import Hub
from tke.internal.auth.chain import AuthChain, AuthConfig, PluginContext, build
from tke.internal.daemon import run_until_stopped
from tke.internal.rpc.interceptors import RequestInterceptor
from tke.internal.rpc.metrics import MetricsInterceptor
from tke.internal.rpc.server import ListenConfig, RunningServer, ServerSpec, start_server
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.store import Store

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
    # Kubeconfigs for the users of the clusters the platform installed (GetKubeconfig).
    kubeconfig: KubeconfigConfig = field(default_factory=KubeconfigConfig)


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
        self.events = Registry(EVENTS, event_store(self.store, config.event_ttl), self.prefix)
        self.credentials = Registry(CREDENTIALS, self.store, self.prefix)
        self.cluster_hub = self._hub(self.clusters)
        self.machine_hub = self._hub(self.machines)
        self.event_hub = self._hub(self.events)
        self.server: RunningServer | None = None

    def _hub(self, registry: Registry[R]) -> Hub[R]:
        w = self.config.watch
        return Hub(
            self.store,
            registry.root,
            registry.decode,
            window=w.window,
            queue_size=w.client_queue,
            progress_interval=w.progress_interval,
        )

    async def start(self) -> RunningServer:
        self.auth: AuthChain = build(self.config.auth, PluginContext(self.store, self.prefix))
        await self.auth.start()
        await asyncio.gather(self.cluster_hub.start(), self.machine_hub.start(), self.event_hub.start())
        bookmark = self.config.watch.bookmark_interval
        clusters = ResourceAPI(self.clusters, self.cluster_hub, bookmark)
        kubeconfigs = KubeconfigIssuer(clusters, self.credentials, self.config.kubeconfig)
        servicers: list[ResourceService[Any]] = [
            ClusterServicer(clusters, kubeconfigs),
            ResourceService(services.MACHINES, ResourceAPI(self.machines, self.machine_hub, bookmark)),
            ResourceService(services.EVENTS, ResourceAPI(self.events, self.event_hub, bookmark)),
            ResourceService(services.CREDENTIALS, ResourceAPI(self.credentials, None, admins_only=True)),
        ]

        def register(server: grpc.aio.Server) -> None:
            for servicer in servicers:
                servicer.add_to(server)
            for _, add in self.auth.services:
                add(server)

        spec = ServerSpec(
            register=register,
            services=[*(s.service.name for s in servicers), *(name for name, _ in self.auth.services)],
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
    try:
        server = await apiserver.start()
        metrics.serve(config.metrics_address)
    except BaseException:
        await apiserver.stop()  # what a half-done start left running
        raise
    listen = config.listen
    where = [f"tcp {listen.address} (port {server.port})"] if listen.address else []
    if listen.unix_socket:
        where.append(f"unix {Path(listen.unix_socket)}")
    log.info("tke-apiserver serving on %s; etcd %s", ", ".join(where), ",".join(config.etcd.endpoints))
    await run_until_stopped()
    log.info("shutting down")
    await apiserver.stop()
