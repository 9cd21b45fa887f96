"""tke-apiserver: its configuration, and the wiring of storage, watch hubs, services and the
interceptor chain into a running server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tke.internal import metrics
from tke.internal.apiserver import quota_service, services
from tke.internal.apiserver.admission import (
    cluster_addresses,
    machine_addresses,
    with_address_policy,
    with_platform_finalizers,
    with_provider_validation,
)
from tke.internal.apiserver.api import ResourceAPI
from tke.internal.apiserver.cache import KindCache, RevisionProbe
from tke.internal.apiserver.event_store import DEFAULT_EVENT_TTL, event_store
from tke.internal.apiserver.kinds import CLUSTERS, CREDENTIALS, EVENTS, machine_kind
from tke.internal.apiserver.kubeconfigs import KubeconfigConfig, KubeconfigIssuer
from tke.internal.apiserver.quota import QuotaConfig, Quotas
from tke.internal.apiserver.registry import R, Registry
from tke.internal.apiserver.services import ClusterServicer, ResourceService
from tke.internal.apiserver.watch import Hub
from tke.internal.apiserver.watch_quota import CatchupQuota, WatchQuota
from tke.internal.auth.chain import AuthChain, AuthConfig, PluginContext, build
from tke.internal.auth.inflight_shares import InflightShares
from tke.internal.daemon import run_until_stopped
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.provider.addresses import AddressConfig, AddressPolicy
from tke.internal.rpc.connections import DEFAULTS as CONNECTION_DEFAULTS
from tke.internal.rpc.connections import ConnectionLimits
from tke.internal.rpc.inflight import HEALTH_CHECKS, HEALTH_WATCHES, InflightLimit
from tke.internal.rpc.interceptors import RequestInterceptor
from tke.internal.rpc.metrics import MetricsInterceptor
from tke.internal.rpc.server import ListenConfig, RunningServer, ServerSpec, start_server
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.etcd.compactor import Compactor
from tke.internal.storage.store import Store
from tke.internal.tasks import cancel_and_wait

log = logging.getLogger("tke.apiserver")


MiB = 1024 * 1024


def _positive(config: object, *names: str) -> None:
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be greater than 0")


@dataclass(frozen=True)
class WatchConfig:
    # Seconds between BOOKMARK events on an idle watch.
    bookmark_interval: float = 10.0
    # Recent changes kept per kind, so that watches resuming from a recent revision are
    # served without touching etcd: at most this many, and at most `window_bytes` of them
    # (stored bytes of each change's new and previous state).
    window: int = 10_000
    window_bytes: int = 64 * MiB
    # How far a single watch client may fall behind before it is ended (RESOURCE_EXHAUSTED
    # and the revision to resume from): changes, and their stored bytes.
    client_queue: int = 1_000
    client_queue_bytes: int = 16 * MiB
    # Seconds between progress requests to etcd (advance bookmarks on quiet kinds).
    progress_interval: float = 5.0
    # Seconds a batched watch (WatchBatches) waits after each message for more changes, so that
    # a busy kind costs each watcher a few messages a second however many changes it has.
    batch_interval: float = 0.25
    # Seconds a watch catching up from etcd's history may leave a change unsent (its client not
    # reading) before the catch-up ends (RESOURCE_EXHAUSTED and the revision to resume from):
    # etcd holds its unsent history, and it holds a catch-up slot (limits.max_catchups).
    catchup_stall: float = 30.0
    # Seconds between checks of an open watch: its credential authenticated and its
    # authorization asked again, as if it were opened now; one that fails ends (UNAUTHENTICATED
    # or PERMISSION_DENIED). Also at once when the built-in accounts or policies change, and by
    # the token's expiry (tke.internal.auth.recheck).
    reauthorize_interval: float = 60.0

    def __post_init__(self) -> None:
        _positive(
            self,
            "bookmark_interval",
            "window",
            "window_bytes",
            "client_queue",
            "client_queue_bytes",
            "catchup_stall",
            "reauthorize_interval",
        )
        if self.batch_interval < 0:
            raise ValueError("batch_interval must be 0 or more seconds")


@dataclass(frozen=True)
class LimitsConfig:
    """What one caller can make the server hold (see "Security model" in the README)."""

    # The largest object stored, encoded; bigger ones are INVALID_ARGUMENT naming the field.
    # etcd refuses requests over its --max-request-bytes (1.5 MiB by default): keep this below.
    max_object_bytes: int = 1 * MiB
    # The largest request grpc accepts (RESOURCE_EXHAUSTED beyond); above max_object_bytes.
    max_request_bytes: int = 4 * MiB
    # Unary calls served at once (Kubernetes' max-requests-inflight); beyond, RESOURCE_EXHAUSTED
    # with a RetryInfo. Watches are not counted here.
    max_requests_inflight: int = 400
    # Of those, the calls one tenant (every user of it together) has in flight at once, so that
    # one tenant cannot take them all (internal/auth/inflight_shares.py). None: a fifth of
    # max_requests_inflight (80 of 400).
    max_requests_inflight_per_tenant: int | None = None
    # Of a tenant's, the calls one of its users has in flight at once, so that one user (a
    # runaway script, a leaked key) cannot lock the tenant's others out. None: half the tenant's.
    max_requests_inflight_per_user: int | None = None
    # Of max_requests_inflight, the places tenants never take: platform administrators' (the
    # controller's) calls get them. None: a tenth of max_requests_inflight (40 of 400).
    requests_inflight_admin_reserve: int | None = None
    # Bytes of one tenant's read answers (Get, List) and watch messages not yet delivered to
    # their clients; a read that would go over is refused, a watch ended (RESOURCE_EXHAUSTED),
    # though one answer always goes.
    max_response_bytes_per_tenant: int = 64 * MiB
    # Watches one identity (tenant and user) holds open at once; beyond, RESOURCE_EXHAUSTED.
    max_watches_per_identity: int = 100
    # Watches one tenant holds open at once, every user of it together. None: 1,000, or
    # max_watches_of_tenants when that is less.
    max_watches_per_tenant: int | None = None
    # Watches all tenants hold open together, so that the streams the server takes (max_streams)
    # keep room for platform administrators' (the controller's informers). None: nine tenths of
    # what max_streams leaves once max_requests_inflight, max_health_watches and
    # max_health_checks are counted (6,840 of 10,000); at most all of it.
    max_watches_of_tenants: int | None = None
    # Health watches (grpc.health.v1.Health/Watch, open to anyone) held at once; beyond,
    # RESOURCE_EXHAUSTED. Health/Check has its own cap below.
    max_health_watches: int = HEALTH_WATCHES
    # Health checks (open to anyone) whose answers are not yet delivered; beyond, RESOURCE_EXHAUSTED.
    max_health_checks: int = HEALTH_CHECKS
    # Watches catching up from etcd's history (resumed from a resource_version older than the
    # replay window) at once, per identity and in this process; each holds an etcd watch whose
    # unsent history etcd keeps in memory. Beyond, RESOURCE_EXHAUSTED with a RetryInfo.
    max_catchups_per_identity: int = 4
    max_catchups: int = 32
    # Connections each listener (TCP, the unix socket) holds at once; None: 10,000, or what the
    # process's open-file limit allows (a value set is lowered to fit it, with a warning). Beyond,
    # a new connection is closed (tke.internal.rpc.connections).
    max_connections: int | None = None
    # Calls in progress at once, of every kind (watches, health, calls still sending their
    # request); beyond, grpc refuses with RESOURCE_EXHAUSTED. Above the limits before together.
    max_streams: int = CONNECTION_DEFAULTS.max_streams
    # Seconds a new connection has to finish its TLS and HTTP/2 handshake.
    handshake_timeout: float = CONNECTION_DEFAULTS.handshake_timeout
    # Seconds a connection without calls is kept before it is closed (clients reconnect); 0: kept.
    connection_idle_timeout: float = CONNECTION_DEFAULTS.connection_idle_timeout
    # Streams (calls) one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS;
    # grpc clients queue calls beyond it). Bounds what one connection's resets cost (CVE-2023-44487).
    max_streams_per_connection: int = CONNECTION_DEFAULTS.max_streams_per_connection

    def __post_init__(self) -> None:
        _positive(
            self,
            "max_object_bytes",
            "max_request_bytes",
            "max_requests_inflight",
            "max_response_bytes_per_tenant",
            "max_watches_per_identity",
            "max_health_watches",
            "max_health_checks",
            "max_catchups_per_identity",
            "max_catchups",
        )
        self.connections.contain(
            self.max_requests_inflight + self.max_health_watches + self.max_health_checks,
            "max_requests_inflight, max_health_watches and max_health_checks",
        )
        for name in ("max_watches_per_tenant", "max_watches_of_tenants"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_watches_of_tenants is not None and self.max_watches_of_tenants > self.watch_streams:
            raise ValueError(
                f"max_watches_of_tenants ({self.max_watches_of_tenants}) must be at most the {self.watch_streams} "
                "streams max_streams leaves for watches once max_requests_inflight, max_health_watches and "
                "max_health_checks are counted"
            )
        if self.max_watches_per_tenant is not None and self.max_watches_per_tenant > self.watches_of_tenants:
            raise ValueError(
                f"max_watches_per_tenant ({self.max_watches_per_tenant}) must be at most max_watches_of_tenants "
                f"({self.watches_of_tenants}), the watches tenants share"
            )
        if self.max_request_bytes <= self.max_object_bytes:
            raise ValueError("max_request_bytes must be larger than max_object_bytes (a request carries the object)")
        if self.max_requests_inflight_per_tenant is not None and self.max_requests_inflight_per_tenant < 1:
            raise ValueError("max_requests_inflight_per_tenant must be at least 1")
        reserve = self.inflight_admin_reserve
        if not 0 <= reserve < self.max_requests_inflight:
            raise ValueError(
                f"requests_inflight_admin_reserve ({reserve}) must be 0 or more and less than "
                f"max_requests_inflight ({self.max_requests_inflight}), or tenants get no call at all"
            )
        if self.max_requests_inflight_per_user is not None and not (
            1 <= self.max_requests_inflight_per_user <= self.inflight_per_tenant
        ):
            raise ValueError(
                f"max_requests_inflight_per_user ({self.max_requests_inflight_per_user}) must be 1 to the "
                f"tenant's share, max_requests_inflight_per_tenant ({self.inflight_per_tenant})"
            )
        if self.inflight_per_tenant > self.inflight_tenants:
            raise ValueError(
                f"max_requests_inflight_per_tenant ({self.inflight_per_tenant}) must be at most max_requests_inflight "
                f"({self.max_requests_inflight}) minus requests_inflight_admin_reserve ({reserve}), the "
                f"{self.inflight_tenants} calls tenants share"
            )

    @property
    def connections(self) -> ConnectionLimits:
        return ConnectionLimits(
            self.max_connections,
            self.max_streams,
            self.handshake_timeout,
            self.connection_idle_timeout,
            self.max_streams_per_connection,
        )

    @property
    def inflight_per_tenant(self) -> int:
        """max_requests_inflight_per_tenant, or its default."""
        explicit = self.max_requests_inflight_per_tenant
        return explicit if explicit is not None else max(1, self.max_requests_inflight // 5)

    @property
    def inflight_per_user(self) -> int:
        """max_requests_inflight_per_user, or its default."""
        explicit = self.max_requests_inflight_per_user
        return explicit if explicit is not None else max(1, self.inflight_per_tenant // 2)

    @property
    def inflight_admin_reserve(self) -> int:
        """requests_inflight_admin_reserve, or its default."""
        explicit = self.requests_inflight_admin_reserve
        return explicit if explicit is not None else self.max_requests_inflight // 10

    @property
    def watch_streams(self) -> int:
        """The streams max_streams leaves for watches (the other limits' calls counted)."""
        return self.max_streams - self.max_requests_inflight - self.max_health_watches - self.max_health_checks

    @property
    def watches_of_tenants(self) -> int:
        """max_watches_of_tenants, or its default."""
        explicit = self.max_watches_of_tenants
        return explicit if explicit is not None else max(1, self.watch_streams * 9 // 10)

    @property
    def watches_per_tenant(self) -> int:
        """max_watches_per_tenant, or its default."""
        explicit = self.max_watches_per_tenant
        return explicit if explicit is not None else min(1000, self.watches_of_tenants)

    @property
    def inflight_tenants(self) -> int:
        """The calls in flight all tenants together may have."""
        return self.max_requests_inflight - self.inflight_admin_reserve


@dataclass(frozen=True)
class ApiserverConfig:
    listen: ListenConfig = field(default_factory=ListenConfig)
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
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
    # Seconds between compactions of etcd's history (each keeps one interval of it; one
    # apiserver compacts per interval however many run); 0 leaves compaction to etcd.
    compaction_interval: float = 300.0
    # Processes serving the TCP port together (SO_REUSEPORT), for more than one core; 1: this
    # process serves. See internal/apiserver/workers.py (and `--workers`).
    workers: int = 1
    # The providers' options for checking specs before they are stored: the same tables as
    # tke-controller's ([cluster_providers.aws.options], ...), at least the operator's limits
    # (docs/providers.md). A type not named here is checked with the provider's defaults.
    cluster_providers: dict[str, ProviderConfig] = field(default_factory=dict)
    machine_providers: dict[str, ProviderConfig] = field(default_factory=dict)
    # Serve Get and List from memory: every object of a watched kind, kept by its watch hub, with
    # reads as consistent as etcd's (internal/apiserver/cache.py). false: every read goes to etcd.
    watch_cache: bool = True
    # What each tenant may store: objects per kind and bytes (internal/apiserver/quota.py).
    quotas: QuotaConfig = field(default_factory=QuotaConfig)
    # Where a tenant's objects may send tke-controller (machine addresses, VIPs, endpoints, an
    # imported cluster's API server): loopback, link-local and the cloud metadata address,
    # unspecified, multicast and reserved networks are refused unless allowed. Configure
    # tke-controller's [machines] alike (tke.internal.provider.addresses).
    machines: AddressConfig = field(default_factory=AddressConfig)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be 1 or more")
        if self.workers > 1 and (not self.listen.address or self.listen.address.endswith(":0")):
            raise ValueError("workers > 1 share one TCP port: set listen.address with a port (not 0)")
        if self.compaction_interval < 0:
            raise ValueError("compaction_interval must be 0 (off) or a number of seconds")
        if self.watch.client_queue_bytes < 2 * self.limits.max_object_bytes:
            raise ValueError("watch.client_queue_bytes must hold at least two objects (2 x limits.max_object_bytes)")


class Apiserver:
    """A running tke-apiserver."""

    def __init__(self, config: ApiserverConfig, store: Store | None = None, *, worker: int | None = None) -> None:
        self.config = config
        # One of several processes sharing the port (None: the only one).
        self.worker = worker
        self.store: Store = store if store is not None else EtcdStore(config.etcd)
        self.prefix = config.etcd.prefix.rstrip("/")
        limit = config.limits.max_object_bytes
        # Providers also check their part of a spec, so that what they cannot build is refused
        # before it is stored.
        self.addresses = addresses = AddressPolicy(config.machines)
        self.clusters = Registry(
            with_platform_finalizers(
                with_address_policy(
                    with_provider_validation(CLUSTERS, "tke.cluster_providers", config.cluster_providers),
                    addresses,
                    cluster_addresses,
                )
            ),
            self.store,
            self.prefix,
            max_object_bytes=limit,
        )
        self.machines = Registry(
            with_platform_finalizers(
                with_address_policy(
                    with_provider_validation(
                        machine_kind(self.clusters), "tke.machine_providers", config.machine_providers
                    ),
                    addresses,
                    machine_addresses,
                )
            ),
            self.store,
            self.prefix,
            max_object_bytes=limit,
        )
        events_store = event_store(self.store, config.event_ttl)
        # Events expire (their store deletes them, touching nothing): no last-write key.
        self.events = Registry(
            EVENTS, events_store, self.prefix, max_object_bytes=limit, marks_writes=events_store is self.store
        )
        # Credentials are written by platform administrators only (admins_only): no quota.
        self.credentials = Registry(CREDENTIALS, self.store, self.prefix, max_object_bytes=limit)
        self.quotas = Quotas(config.quotas)
        if config.quotas.enabled:
            for registry in (self.clusters, self.machines, self.events):
                registry.usage = self.quotas.kind(registry.kind.plural, registry.kind.name, registry.root)
        self.revision_probe = RevisionProbe(self.store, self.prefix)
        self.cluster_hub = self._hub(self.clusters)
        self.machine_hub = self._hub(self.machines)
        self.event_hub = self._hub(self.events)
        self.watch_quota = WatchQuota(
            config.limits.max_watches_per_identity,
            config.limits.watches_per_tenant,
            config.limits.watches_of_tenants,
        )
        self.catchup_quota = CatchupQuota(config.limits.max_catchups_per_identity, config.limits.max_catchups)
        limits = config.limits
        self.inflight = InflightLimit(
            limits.max_requests_inflight,
            health_watches=limits.max_health_watches,
            health_checks=limits.max_health_checks,
        )
        self.inflight_shares = InflightShares(
            limits.inflight_per_tenant,
            limits.inflight_tenants,
            per_user=limits.inflight_per_user,
            bytes_per_tenant=limits.max_response_bytes_per_tenant,
            reserved=limits.inflight_admin_reserve,
        )
        self.compactor: Compactor | None = None
        if isinstance(self.store, EtcdStore) and config.compaction_interval > 0:
            self.compactor = Compactor(self.store.connection, config.compaction_interval)
        self._compacting: asyncio.Task[None] | None = None
        self.server: RunningServer | None = None

    def _hub(self, registry: Registry[R]) -> Hub[R]:
        w = self.config.watch
        if self.config.watch_cache:
            registry.cache = KindCache(
                registry.store,
                registry.root,
                self.revision_probe,
                frame=registry.framed,
                last_write=registry.last_write,
            )
        return Hub(
            self.store,
            registry.root,
            registry.decode,
            window=w.window,
            window_bytes=w.window_bytes,
            queue_size=w.client_queue,
            queue_bytes=w.client_queue_bytes,
            progress_interval=w.progress_interval,
            catchup_stall=w.catchup_stall,
            cache=registry.cache,
            usage=registry.usage,
        )

    async def _trust_progress(self) -> None:
        """Let the watch caches of kinds without a last-write key (events) rely on etcd's
        progress notifications when its version orders them with events (cache.py)."""
        caches = [r.cache for r in (self.clusters, self.machines, self.events) if r.cache is not None]
        unmarked = [c for c in caches if c.last_write is None]
        if not unmarked or not isinstance(self.store, EtcdStore):
            return
        ordered = await self.store.progress_ordered()
        for cache in unmarked:
            cache.progress_trusted = ordered
        if not ordered:
            log.info(
                "a read of %s after writes to other keys is answered by etcd, not the watch cache: this etcd's "
                "progress notifications may run ahead of its changes",
                ", ".join(c.kind for c in unmarked),
            )

    async def start(self) -> RunningServer:
        tls = self.config.listen.tls
        self.auth: AuthChain = build(
            self.config.auth,
            PluginContext(self.store, self.prefix, quota_kind=self.quotas.kind if self.config.quotas.enabled else None),
            peer_certificates=tls is not None and bool(tls.client_ca_file),
            reauthorize_interval=self.config.watch.reauthorize_interval,
        )
        # etcd answers within the retry budget, or the start fails (Unavailable: exit 1).
        await self.store.current_revision()
        await self._trust_progress()
        await self.auth.start()
        await asyncio.gather(self.cluster_hub.start(), self.machine_hub.start(), self.event_hub.start())
        # The key that seals continue tokens exists before anyone lists (and before etcd could
        # be too full to create it).
        await self.clusters.page_tokens()
        bookmark, quota = self.config.watch.bookmark_interval, self.watch_quota
        batch = self.config.watch.batch_interval

        # A tenant's watch messages count against its bytes not yet delivered, as its answers do.
        message_bytes = self.inflight_shares if self.auth.enabled else None

        def api(registry: Registry[R], hub: Hub[R]) -> ResourceAPI[R]:
            return ResourceAPI(
                registry,
                hub,
                bookmark,
                quota,
                catchup_quota=self.catchup_quota,
                batch_interval=batch,
                message_bytes=message_bytes,
            )

        clusters = api(self.clusters, self.cluster_hub)
        kubeconfigs = KubeconfigIssuer(clusters, self.credentials, self.config.kubeconfig, self.addresses)
        servicers: list[ResourceService[Any]] = [
            ClusterServicer(clusters, kubeconfigs),
            ResourceService(services.MACHINES, api(self.machines, self.machine_hub)),
            ResourceService(services.EVENTS, api(self.events, self.event_hub)),
            ResourceService(services.CREDENTIALS, ResourceAPI(self.credentials, None, admins_only=True)),
        ]

        quotas = quota_service.QuotaServicer(self.quotas)

        def register(server: grpc.aio.Server) -> None:
            for servicer in servicers:
                servicer.add_to(server)
            quotas.add_to(server)
            for _, add in self.auth.services:
                add(server)

        spec = ServerSpec(
            register=register,
            services=[
                *(s.service.name for s in servicers),
                quota_service.SERVICE,
                *(name for name, _ in self.auth.services),
            ],
            interceptors=[
                RequestInterceptor(audited=self.auth.records_calls),
                MetricsInterceptor(),
                self.inflight,
                *self.auth.interceptors,
                # After authentication, which names the caller's tenant; without it every caller
                # is a platform administrator, whom the shares do not count.
                *([self.inflight_shares] if self.auth.enabled else []),
            ],
            on_stop=[self.cluster_hub.stop, self.machine_hub.stop, self.event_hub.stop],
            max_receive_bytes=self.config.limits.max_request_bytes,
            connections=self.config.limits.connections,
        )
        listen = self.config.listen
        if self.worker:  # the unix socket is worker 0's
            listen = dataclasses.replace(listen, unix_socket="")
        self.server = await start_server(listen, spec, reuse_port=self.worker is not None)
        if self.compactor is not None:
            self._compacting = asyncio.create_task(self.compactor.run(), name="etcd compactor")
        return self.server

    async def stop(self) -> None:
        await cancel_and_wait(self._compacting)
        if self.server is not None:
            await self.server.stop(self.config.shutdown_grace)
            await self.auth.stop()
        await self.store.close()


def metrics_address(config: ApiserverConfig, worker: int | None) -> str:
    """Where this process serves its metrics: worker I on the configured port + I."""
    if not worker or not config.metrics_address:
        return config.metrics_address
    host, _, port = config.metrics_address.rpartition(":")
    return f"{host}:{int(port) + worker}"


async def serve(config: ApiserverConfig, worker: int | None = None) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully. `worker`: this process is worker I of
    several sharing the port (internal/apiserver/workers.py)."""
    apiserver = Apiserver(config, worker=worker)
    try:
        server = await apiserver.start()
        metrics.serve(metrics_address(config, worker))
    except BaseException:
        await apiserver.stop()  # what a half-done start left running
        raise
    listen = config.listen
    where = [f"tcp {listen.address} (port {server.port})"] if listen.address else []
    if listen.unix_socket and not worker:
        where.append(f"unix {Path(listen.unix_socket)}")
    name = "tke-apiserver" if worker is None else f"tke-apiserver worker {worker}"
    log.info("%s serving on %s; etcd %s", name, ", ".join(where), ",".join(config.etcd.endpoints))
    await run_until_stopped()
    log.info("shutting down")
    await apiserver.stop()
