"""tke-ipamd's wiring: plugins from the configuration, the IPAM core, and its listeners: a
unix socket for the node (owner only: its mode is its access control; restricted to the
daemon's own node when it knows it, noderule.py), and TCP for everyone else, with TLS and the
apiserver's authentication and authorization (ipamd's tenancy in authz.py; node identities
restricted to their node, noderule.py); TCP without them only when the configuration says
insecure. With [kubernetes], the
cluster's API: pods' workloads resolved from their ownerReferences, and optionally the workload
watcher and the scheduler extender (plain HTTP: loopback only)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from tke.internal import metrics
from tke.internal.auth.chain import AuthChain, PluginContext, build
from tke.internal.auth.identity import current_identity
from tke.internal.daemon import run_until_stopped
from tke.internal.ipamd.authz import NamespaceTenants, TenancyError, ipam_attributes
from tke.internal.ipamd.config import IpamdConfig, KubernetesConfig
from tke.internal.ipamd.extender import Extender
from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.kube_resolver import KubeResolver
from tke.internal.ipamd.kube_watcher import WorkloadWatcher
from tke.internal.ipamd.noderule import NODE, NodeCaller, of_identity, of_socket
from tke.internal.ipamd.pool_metrics import refresh_pool_gauges
from tke.internal.ipamd.provider import IPProvider
from tke.internal.ipamd.service import SERVICE_NAME, IPAMServicer
from tke.internal.ipamd.storage import IPStorage
from tke.internal.plugin import loader
from tke.internal.provider.errors import PermanentError
from tke.internal.provider.kube.access import from_kubeconfig, in_cluster
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.rpc.inflight import InflightLimit
from tke.internal.rpc.interceptors import RequestInterceptor
from tke.internal.rpc.metrics import MetricsInterceptor
from tke.internal.rpc.server import ListenConfig, RunningServer, ServerSpec, TLSConfig, start_server
from tke.internal.storage.etcd import EtcdStore
from tke.internal.tasks import cancel_and_wait
from tke.ipam.v1 import ipam_pb2_grpc

log = logging.getLogger("tke.ipamd")

STORAGE_GROUP = "tke.ip_storage"
PROVIDER_GROUP = "tke.ip_providers"


class ConfigurationError(Exception):
    """The configuration names something that cannot work (message for the operator)."""


def build_storage(config: IpamdConfig) -> IPStorage:
    storage: IPStorage = loader.load(STORAGE_GROUP, config.storage.plugin or "etcd", config.storage.options)
    return storage


def build_providers(config: IpamdConfig) -> dict[str, IPProvider]:
    # "static" (the pools' own CIDRs) is always there, loaded like any other provider.
    providers: dict[str, IPProvider] = {"static": loader.load(PROVIDER_GROUP, "static")}
    for name, pc in config.providers.items():
        providers[name] = loader.load(PROVIDER_GROUP, pc.plugin or name, pc.options)
    return providers


def build_kube_api(config: KubernetesConfig) -> ClusterAPI | None:
    """The cluster's API client, None without [kubernetes]."""
    if not config.configured:
        return None
    try:
        if config.kubeconfig:
            path = Path(config.kubeconfig)
            text = path.read_text()
            access = from_kubeconfig(text, context=config.context, base_dir=path.parent, allow_exec=True)
        else:
            access = in_cluster()
    except OSError as err:
        raise ConfigurationError(f"[kubernetes] kubeconfig: cannot read {config.kubeconfig}: {err.strerror}") from None
    except PermanentError as err:
        raise ConfigurationError(f"[kubernetes]: {err}") from None
    return ClusterAPI(access, timeout=config.timeout, field_manager="tke-ipamd")


def own_node(config: IpamdConfig, environ: Mapping[str, str] = os.environ) -> str:
    """The node this daemon serves ('' for every node): `node_name`, or the variable
    `node_name_env` names, which must then hold a node name (a DaemonSet meant to restrict its
    socket never starts serving every node because the variable is missing)."""
    if not config.node_name_env:
        return config.node_name
    value = environ.get(config.node_name_env, "")
    if not NODE.fullmatch(value):
        said = f"is {value!r}" if value else "is empty or not set"
        raise ConfigurationError(
            f"node_name_env: ${config.node_name_env} {said}; it must hold this node's name "
            "(in a DaemonSet: env from fieldRef spec.nodeName)"
        )
    return value


def _tcp_caller() -> NodeCaller | None:
    return of_identity(current_identity.get())


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Ipamd:
    """A running tke-ipamd: one IPAM core behind one or two listeners, and what follows the
    cluster's Kubernetes API when it has one."""

    def __init__(self, config: IpamdConfig) -> None:
        self.config = config
        self.storage = build_storage(config)
        self.providers = build_providers(config)
        self.kube = build_kube_api(config.kubernetes)
        self.resolver = KubeResolver(self.kube) if self.kube is not None else None
        self.ipam = IPAM(
            self.storage,
            self.providers,
            cooldown=config.release_cooldown,
            resolver=self.resolver,
            max_allocations_per_node=config.max_allocations_per_node,
        )
        self.servers: list[RunningServer] = []
        self.unix_inflight: InflightLimit | None = None
        self.tcp_inflight: InflightLimit | None = None
        self.auth: AuthChain | None = None
        self.auth_store: EtcdStore | None = None
        self._reconcile: asyncio.Task[None] | None = None
        self.watcher: WorkloadWatcher | None = None
        self.watching: asyncio.Task[None] | None = None
        self.extender: web.AppRunner | None = None
        self.extender_port = 0

    def _spec(self, interceptors: list[Any], node_caller: Callable[[], NodeCaller | None]) -> ServerSpec:
        servicer = IPAMServicer(self.ipam, node_caller)

        def register(server: grpc.aio.Server) -> None:
            ipam_pb2_grpc.add_IPAMServiceServicer_to_server(servicer, server)

        return ServerSpec(
            register=register,
            services=[SERVICE_NAME],
            interceptors=interceptors,
            connections=self.config.connections,
        )

    async def start(self) -> list[RunningServer]:
        c = self.config
        if c.socket_mode & 0o077:
            raise ConfigurationError(
                f"socket_mode {c.socket_mode:#o} lets other users in: the unix socket has no authentication, "
                "its mode is its access control (0600: its owner only, root for the CNI plugins)"
            )
        try:
            tenants = NamespaceTenants(c.tcp.tenants)
        except TenancyError as err:
            raise ConfigurationError(str(err)) from None
        node = own_node(c)
        await self._claim_storage()
        if c.socket:
            unix = ListenConfig(address="", unix_socket=c.socket, unix_socket_mode=c.socket_mode)
            self.unix_inflight = InflightLimit(c.max_requests_inflight)
            interceptors = [RequestInterceptor(), MetricsInterceptor(), self.unix_inflight]
            socket_caller = of_socket(node)
            self.servers.append(await start_server(unix, self._spec(interceptors, lambda: socket_caller)))
        if c.tcp.address:
            tls = None
            if c.tcp.cert_file or c.tcp.key_file:
                tls = TLSConfig(c.tcp.cert_file, c.tcp.key_file, c.tcp.client_ca_file)
            elif not c.tcp.insecure:
                raise ConfigurationError("[tcp] needs cert_file and key_file (or insecure = true for development)")
            if c.tcp.auth.authenticators:
                self.auth_store = EtcdStore(c.tcp.auth_etcd)
                context = PluginContext(self.auth_store, c.tcp.auth_etcd.prefix.rstrip("/"))
                self.auth = build(c.tcp.auth, context, attributes=ipam_attributes(tenants))
                await self.auth.start()
            elif c.tcp.insecure:
                log.warning(
                    "THE TCP LISTENER %s HAS NO AUTHENTICATION: every caller acts as platform administrator "
                    "(insecure = true; development only)",
                    c.tcp.address,
                )
            else:
                raise ConfigurationError(
                    "[tcp] without [tcp.auth] authenticators would serve every caller as platform administrator: "
                    "configure [tcp.auth] (as the apiserver's [auth]), or set insecure = true for development"
                )
            audited = self.auth is not None and self.auth.records_calls
            # Before authentication: a flood is refused before any work is done for it.
            self.tcp_inflight = InflightLimit(c.max_requests_inflight)
            interceptors = [RequestInterceptor(audited=audited), MetricsInterceptor(), self.tcp_inflight]
            if self.auth is not None:
                interceptors += self.auth.interceptors
            self.servers.append(
                await start_server(ListenConfig(address=c.tcp.address, tls=tls), self._spec(interceptors, _tcp_caller))
            )
        await self._start_kubernetes()
        if not self.servers and self.watcher is None and self.extender is None:
            raise ConfigurationError("nothing to serve: set socket, [tcp] address, [extender] or a workload watcher")
        # The environment is made to agree with the storage in the background: a slow cloud
        # API must not keep the node's socket from serving.
        self._reconcile = asyncio.create_task(self._reconcile_providers())
        return self.servers

    async def _claim_storage(self) -> None:
        """A storage that says whose cluster it serves (EtcdIPStorage.claim) is made this
        cluster's before anything is served from it."""
        claim = getattr(self.storage, "claim", None)
        if claim is None:
            return
        uid = self.config.storage.options.get("cluster_uid", "")
        before = await claim()
        if before and uid and before != uid:
            log.warning(
                "the IP storage held an earlier cluster's addresses (cluster uid %s); emptied for cluster uid %s",
                before,
                uid,
            )

    async def _reconcile_providers(self) -> None:
        try:
            await self.ipam.reconcile_providers()
        except Exception:
            log.exception("reconciling the IP providers with the storage failed")

    async def _start_kubernetes(self) -> None:
        k, e = self.config.kubernetes, self.config.extender
        if (k.watch_workloads or e.address) and self.kube is None:
            raise ConfigurationError(
                "the workload watcher and the extender need [kubernetes] (kubeconfig or in_cluster)"
            )
        if e.address:
            if not _loopback(e.address):
                raise ConfigurationError(
                    f"[extender] address {e.address}: the extender speaks plain HTTP without authentication; "
                    "it listens on loopback only (kube-scheduler calls the tke-ipamd of its own node)"
                )
            assert self.resolver is not None
            runner = web.AppRunner(
                Extender(self.ipam, self.resolver).app(e.max_body_bytes), access_log=None, handle_signals=False
            )
            await runner.setup()
            host, _, port = e.address.rpartition(":")
            site = web.TCPSite(runner, host.strip("[]"), int(port))
            await site.start()
            self.extender = runner
            self.extender_port = runner.addresses[0][1]
        if k.watch_workloads:
            assert self.kube is not None
            self.watcher = WorkloadWatcher(self.kube, self.ipam, cursor_interval=k.cursor_interval)
            self.watching = asyncio.create_task(self.watcher.run(), name="workload watcher")

    async def stop(self) -> None:
        # The reconcile logs its own failures; the watcher's failure was raised by serve().
        with contextlib.suppress(Exception):
            await cancel_and_wait(self._reconcile, self.watching)
        if self.extender is not None:
            await self.extender.cleanup()
        await asyncio.gather(*(s.stop(self.config.shutdown_grace) for s in self.servers))
        if self.kube is not None:
            await self.kube.aclose()
        if self.auth is not None:
            await self.auth.stop()
        if self.auth_store is not None:
            await self.auth_store.close()
        for provider in self.providers.values():
            await provider.close()
        await self.storage.close()


async def serve(config: IpamdConfig) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully."""
    ipamd = Ipamd(config)
    try:
        await ipamd.start()
        metrics.serve(config.metrics_address)
    except BaseException:
        await ipamd.stop()  # what a half-done start left running
        raise
    # Pool gauges read every block of every pool: only when someone scrapes them (one ipamd
    # per node would otherwise multiply that load on etcd by the number of nodes).
    gauges = (
        asyncio.create_task(refresh_pool_gauges(ipamd.ipam), name="pool metrics") if config.metrics_address else None
    )
    node = own_node(config)
    where = [f"unix {config.socket}" + (f" (node {node} only)" if node else "")] if config.socket else []
    if config.tcp.address:
        where.append(f"tcp {config.tcp.address} (port {ipamd.servers[-1].port})")
    if ipamd.extender is not None:
        where.append(f"scheduler extender http {config.extender.address} (port {ipamd.extender_port})")
    if ipamd.watcher is not None:
        where.append("workload watcher")
    log.info("tke-ipamd serving on %s; storage %s", ", ".join(where), config.storage.plugin or "etcd")
    try:
        # The workload watcher never ends by itself: if it does, it failed, and so does the daemon.
        await run_until_stopped(ipamd.watching)
    finally:
        log.info("shutting down")
        if gauges is not None:
            gauges.cancel()
        await ipamd.stop()
