"""tke-controller: wires the apiserver clients, informers, the cluster and machine
controllers, the events recorder and leader election into one process.

Informers run in every process (a standby keeps a warm cache, so a takeover starts at
once); workers run only in the elected leader. Losing the lease stops the workers and ends
the process with LostLeadership: a supervisor restarts it and it campaigns again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from tke.internal.controller.cache import by_cluster
from tke.internal.controller.client import CLUSTERS, CREDENTIALS, EVENTS, MACHINES, ApiClient, open_channel
from tke.internal.controller.cluster import ClusterController
from tke.internal.controller.config import ControllerConfig, ProviderConfig
from tke.internal.controller.credentials import ApiCredentialStore
from tke.internal.controller.events import ApiRecorder
from tke.internal.controller.informer import Informer
from tke.internal.controller.leader import LeaderElector
from tke.internal.controller.machine import MachineController
from tke.internal.controller.progress import RetryPolicy
from tke.internal.controller.reconciler import Reconciler
from tke.internal.controller.workers import run_workers
from tke.internal.plugin import loader
from tke.internal.provider.clusterapi import ClusterAPIs, NoClusterAPIs
from tke.internal.provider.contract import Tools
from tke.internal.provider.credentials import ConfiguredCredentials
from tke.internal.provider.ssh import Dialer, SSHDialer
from tke.internal.provider.steps import check_plans
from tke.internal.storage.etcd import EtcdStore
from tke.internal.storage.lease import LeasedStore
from tke.platform.v1 import cluster_pb2, machine_pb2

log = logging.getLogger("tke.controller")
CLUSTER_GROUP = "tke.cluster_providers"
MACHINE_GROUP = "tke.machine_providers"


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


class Controller:
    def __init__(
        self,
        config: ControllerConfig,
        *,
        leases: LeasedStore | None = None,
        cluster_providers: dict[str, Any] | None = None,
        machine_providers: dict[str, Any] | None = None,
        dialer: Dialer | None = None,
        cluster_apis: ClusterAPIs | None = None,
    ) -> None:
        """`cluster_providers`, `machine_providers`, `dialer` (how steps reach machines) and
        `cluster_apis` (the Kubernetes API client of the clusters' own API servers) replace
        what the configuration would load (tests, embedding)."""
        self.config = config
        self._own_store = leases is None and config.leader.enabled
        self.leases: LeasedStore | None = EtcdStore(config.etcd) if self._own_store else leases
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
        credentials = ConfiguredCredentials(config.credentials)
        if cluster_apis is None and config.cluster_api.plugin:
            cluster_apis = loader.load("tke.cluster_apis", config.cluster_api.plugin, config.cluster_api.options)
        self.credentials = ApiClient(CREDENTIALS, self.channel, token, timeout)
        tools = Tools(
            dialer=dialer or SSHDialer(credentials, config.ssh),
            credentials=credentials,
            cluster_credentials=ApiCredentialStore(self.credentials),
            cluster_apis=cluster_apis or NoClusterAPIs(),
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
        if config.leader.enabled and self.leases is not None:
            key = config.etcd.prefix.rstrip("/") + config.leader.key
            self.elector = LeaderElector(self.leases, key, identity, ttl=config.leader.ttl)

    async def _work(self) -> None:
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
                group.create_task(run_workers(c.kind.lower(), c.queue, c.reconcile, self.config.workers))

    async def run(self) -> None:
        """Run until cancelled (or until leadership is lost: LostLeadership)."""
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
                await self.elector.run(self._work)
            else:
                log.warning("LEADER ELECTION IS OFF: run only one tke-controller")
                await self._work()
        finally:
            for task in informers:
                task.cancel()
            for task in informers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.recorder.stop()
            await self.channel.close()
            if self._own_store and self.leases is not None:
                await self.leases.close()
