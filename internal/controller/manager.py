"""tke-controller: wires the apiserver clients, informers, the cluster and machine
controllers, the events recorder and leader election into one process.

Informers run in every process (a standby keeps a warm cache, so a takeover starts at
once); workers run only in the elected leader. Losing the lease (etcd stalled, defragmenting,
unreachable for longer than the lease) stops the workers; the process stays, campaigns again,
and takes leadership back when etcd answers and nobody else holds it. It never exits because
of etcd.

The leader publishes the catalogue of its configured credentials (names only) in etcd when it
takes over, which the apiserver checks references against (provider/credentials.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from tke.internal.controller.cache import by_cluster
from tke.internal.controller.client import CLUSTERS, CREDENTIALS, EVENTS, MACHINES, ApiClient, open_channel
from tke.internal.controller.cluster import ClusterController
from tke.internal.controller.config import ControllerConfig
from tke.internal.controller.credentials import ApiCredentialStore
from tke.internal.controller.events import ApiRecorder
from tke.internal.controller.informer import Informer
from tke.internal.controller.leader import LeaderElector, LostLeadership
from tke.internal.controller.machine import MachineController
from tke.internal.controller.progress import RetryPolicy
from tke.internal.controller.reconciler import Reconciler
from tke.internal.controller.workers import run_workers
from tke.internal.plugin import loader
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.provider.addresses import AddressPolicy
from tke.internal.provider.clusterapi import ClusterAPIs
from tke.internal.provider.contract import Toolbox
from tke.internal.provider.credentials import ConfiguredCredentials, publish_catalogue
from tke.internal.provider.ssh import Dialer, SSHDialer
from tke.internal.provider.steps import check_plans
from tke.internal.storage.etcd import EtcdStore
from tke.internal.storage.lease import LeasedStore
from tke.internal.storage.store import StorageError
from tke.internal.tasks import cancel_and_wait
from tke.platform.v1 import cluster_pb2, machine_pb2

log = logging.getLogger("tke.controller")
CLUSTER_GROUP = "tke.cluster_providers"
MACHINE_GROUP = "tke.machine_providers"
# The clusters' Kubernetes API client when the configuration names no other.
BUILTIN_CLUSTER_APIS = "tke.internal.provider.clusterapi:KubeClusterAPIs"


def load_providers(group: str, configured: dict[str, ProviderConfig]) -> dict[str, Any]:
    """Providers by the spec.type they serve; each one's plans checked (names valid, unique)."""
    wanted = configured or {name: ProviderConfig() for name in loader.available(group)}
    out = {}
    for type_name, cfg in wanted.items():
        provider = loader.load(group, cfg.plugin or type_name, cfg.options)
        try:
            plans = {
                "create": provider.create_steps,
                "delete": provider.delete_steps,
                "scale": provider.scale_steps,
                "upgrade": provider.upgrade_steps,
            }
            check_plans(type_name, plans)
        except (AttributeError, ValueError) as err:
            raise loader.PluginError(f"{group} plugin {type_name!r} is not a valid provider: {err}") from None
        out[type_name] = provider
    return out


def load_cluster_apis(configured: ProviderConfig) -> ClusterAPIs:
    """The clusters' Kubernetes API client: the configured plugin, else the built-in one."""
    apis: ClusterAPIs = loader.load("tke.cluster_apis", configured.plugin or BUILTIN_CLUSTER_APIS, configured.options)
    return apis


class Controller:
    def __init__(
        self,
        config: ControllerConfig,
        *,
        leases: LeasedStore | None = None,
        cluster_providers: dict[str, Any] | None = None,
        machine_providers: dict[str, Any] | None = None,
        dialer: Dialer | None = None,
        credentials: ConfiguredCredentials | None = None,
        cluster_apis: ClusterAPIs | None = None,
    ) -> None:
        """`cluster_providers`, `machine_providers`, `dialer` (how steps reach machines),
        `credentials` (the operators' login credentials, by tenant) and `cluster_apis` (the
        Kubernetes API client of the clusters' own API servers) replace what the configuration
        would load (tests, embedding). Raises CredentialError for a badly named credential."""
        self.config = config
        self.credentials = credentials or ConfiguredCredentials(config.credentials)
        self._own_store = leases is None
        # etcd: the leader lock and the credential catalogue.
        self.leases: LeasedStore = EtcdStore(config.etcd) if leases is None else leases
        token = os.environ.get(config.apiserver.token_env, "") if config.apiserver.token_env else ""
        self.channel = open_channel(config.apiserver)
        timeout = config.apiserver.timeout
        self.clusters = ApiClient(CLUSTERS, self.channel, token, timeout)
        self.machines = ApiClient(MACHINES, self.channel, token, timeout)
        self.events = ApiClient(EVENTS, self.channel, token, timeout)
        self.cluster_informer: Informer[cluster_pb2.Cluster] = Informer(self.clusters, resync=config.resync)
        self.machine_informer: Informer[machine_pb2.Machine] = Informer(
            self.machines, resync=config.resync, indexers={"cluster": by_cluster}
        )
        self.recorder = ApiRecorder(self.events, "tke-controller")
        if cluster_apis is None:
            cluster_apis = load_cluster_apis(config.cluster_api)
        self.cluster_credentials = ApiClient(CREDENTIALS, self.channel, token, timeout)
        addresses = AddressPolicy(config.machines)
        tools = Toolbox(
            dialer=dialer or SSHDialer(self.credentials, config.ssh, addresses),
            credentials=self.credentials,
            cluster_credentials=ApiCredentialStore(self.cluster_credentials),
            cluster_apis=cluster_apis,
            addresses=addresses,
        )
        policy = RetryPolicy(config.max_retries, config.retry_base_delay, config.retry_max_delay)
        self.cluster_controller = ClusterController(
            self.clusters,
            self.machines,
            self.cluster_informer,
            self.machine_informer,
            providers=cluster_providers or load_providers(CLUSTER_GROUP, config.cluster_providers),
            tools=tools,
            recorder=self.recorder,
            policy=policy,
            health_interval=config.health_interval,
        )
        self.machine_controller = MachineController(
            self.machines,
            self.machine_informer,
            self.cluster_informer,
            clusters=self.clusters,
            providers=machine_providers or load_providers(MACHINE_GROUP, config.machine_providers),
            tools=tools,
            recorder=self.recorder,
            policy=policy,
            health_interval=config.health_interval,
        )
        identity = config.leader.identity or f"{socket.gethostname()}-{os.getpid()}"
        self.elector: LeaderElector | None = None
        if config.leader.enabled:
            key = config.etcd.prefix.rstrip("/") + config.leader.key
            self.elector = LeaderElector(self.leases, key, identity, ttl=config.leader.ttl)

    async def _publish_credentials(self) -> None:
        """Publish the credential catalogue, retrying while etcd does not answer."""
        delay = 1.0
        while True:
            try:
                await publish_catalogue(self.leases, self.config.etcd.prefix, self.credentials.catalogue())
            except StorageError as err:
                log.warning("cannot publish the credential catalogue yet (%s); retrying in %.0fs", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            log.info("published the credential catalogue: %d credentials", len(self.credentials.names()))
            return

    async def _work(self) -> None:
        publishing = asyncio.create_task(self._publish_credentials(), name="credential-catalogue")
        try:
            await self._lead()
        finally:
            await cancel_and_wait(publishing)

    async def _lead(self) -> None:
        await asyncio.gather(self.cluster_informer.synced.wait(), self.machine_informer.synced.wait())
        log.info(
            "leading: %d clusters, %d machines in cache",
            len(self.cluster_informer.cache.all_keys()),
            len(self.machine_informer.cache.all_keys()),
        )
        # Everything known is looked at once after taking over (a deposed leader may have
        # stopped mid-step).
        controllers: list[Reconciler[Any, Any]] = [self.cluster_controller, self.machine_controller]
        for c in controllers:
            for key in c.informer.cache.all_keys():
                c.queue.add(key)
        async with asyncio.TaskGroup() as group:
            for c in controllers:
                c.queue.tenant_share = self.config.tenant_share
                group.create_task(run_workers(c.kind.lower(), c.queue, c.reconcile, self.config.workers))

    async def _lead_whenever_elected(self, elector: LeaderElector) -> None:
        while True:
            try:
                await elector.run(self._work)
                return
            except LostLeadership as err:
                log.warning("lost leadership (%s): the workers stopped; campaigning again", err)
            except Exception:  # the work itself failed: start over rather than exit
                log.exception("the controllers failed; campaigning again")
                await asyncio.sleep(1.0)

    async def run(self) -> None:
        """Run until cancelled."""
        self.recorder.start()
        log.info(
            "providers: clusters %s; machines %s",
            ", ".join(sorted(self.cluster_controller.providers)),
            ", ".join(sorted(self.machine_controller.providers)),
        )
        informers = [
            asyncio.create_task(self.cluster_informer.run(), name="cluster-informer"),
            asyncio.create_task(self.machine_informer.run(), name="machine-informer"),
        ]
        try:
            if self.elector is not None:
                await self._lead_whenever_elected(self.elector)
            else:
                log.warning("LEADER ELECTION IS OFF: run only one tke-controller")
                await self._work()
        finally:
            await cancel_and_wait(*informers)
            await self.recorder.stop()
            await self.channel.close()
            if self._own_store:
                await self.leases.close()
