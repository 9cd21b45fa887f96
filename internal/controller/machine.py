"""The machine controller: drives each Machine through its provider's plans (lifecycle.py).

A machine's create steps wait until its cluster is Running (they join it); the machine's
upgrade runs when the cluster's running version differs from the machine's kubelet version.
A machine whose cluster is gone is released without teardown (there is nothing to leave).

Upgrades of a cluster's machines go one at a time: the cluster's upgrade slot is the
annotation UPGRADE_SLOT on the Cluster object, naming the machine that upgrades. A machine's
upgrade plan starts by taking it (an Update carrying the resource_version just read, so two
machines can never both win) and ends by giving it back; a machine that finds the slot taken
waits. Since the cluster's status.version changes only after its control plane was upgraded
and the cluster is Running again, workers start after the control plane. A machine whose
upgrade failed keeps the slot, which stops the rollout until an operator looks; deleting it
gives the slot back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from tke.internal.controller.cache import object_key
from tke.internal.controller.client import ResourceClient
from tke.internal.controller.events import Recorder
from tke.internal.controller.informer import Informer
from tke.internal.controller.lifecycle import Phases
from tke.internal.controller.progress import RetryPolicy
from tke.internal.controller.reconciler import Reconciler
from tke.internal.provider.contract import MachineContext, MachineProvider, Toolbox, Tools, reconcile_tools
from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.steps import Step
from tke.platform.v1 import cluster_pb2, machine_pb2

FINALIZER = "tke.cloud/machine-provider"
UPGRADE_SLOT = "tke.cloud/upgrading-machine"
PHASES = Phases(
    initializing=machine_pb2.MACHINE_PHASE_INITIALIZING,
    running=machine_pb2.MACHINE_PHASE_RUNNING,
    failed=machine_pb2.MACHINE_PHASE_FAILED,
    terminating=machine_pb2.MACHINE_PHASE_TERMINATING,
    upgrading=machine_pb2.MACHINE_PHASE_INITIALIZING,  # machines have no Upgrading phase
)


class MachineController(Reconciler[machine_pb2.Machine, MachineProvider]):
    def __init__(
        self,
        machines: ResourceClient[machine_pb2.Machine],
        machine_informer: Informer[machine_pb2.Machine],
        cluster_informer: Informer[cluster_pb2.Cluster],
        *,
        clusters: ResourceClient[cluster_pb2.Cluster],
        providers: dict[str, MachineProvider],
        tools: Toolbox,
        recorder: Recorder,
        policy: RetryPolicy,
        health_interval: float = 60.0,
    ) -> None:
        super().__init__(
            machines,
            machine_informer,
            finalizer=FINALIZER,
            phases=PHASES,
            providers=providers,
            tools=tools,
            recorder=recorder,
            policy=policy,
            health_interval=health_interval,
        )
        self.cluster_informer = cluster_informer
        self.clusters = clusters
        # A cluster that becomes Running (or changes version) wakes its machines.
        cluster_informer.add_handler(self._cluster_changed)

    def _cluster_changed(self, change: object, cluster: cluster_pb2.Cluster) -> None:
        for m in self.informer.cache.by_index("cluster", object_key(cluster)):
            self.queue.add(object_key(m))

    async def reconcile(self, key: str) -> float | None:
        copies = self.working_copy(key)
        if copies is None:
            return None
        cached, obj = copies
        cluster = self.cluster_informer.cache.get(f"{obj.metadata.tenant_id}/{obj.spec.cluster_name}")
        provider = self.providers.get(obj.spec.type)
        if cluster is None and obj.metadata.HasField("deletion_timestamp"):
            provider = None  # the cluster is gone: nothing to drain or leave
        elif cluster is None:
            return 5.0  # the cluster informer has not seen it yet
        if provider is None and not obj.metadata.HasField("deletion_timestamp"):
            if obj.status.reason != "UnknownProvider":
                await self.fail_unknown_provider(cached, obj)
            return None
        async with reconcile_tools(self.tools, obj.metadata.tenant_id) as tools:
            return await self.lifecycle.reconcile(obj, provider, _Adapter(self, cluster, tools))


class _Adapter:
    def __init__(self, controller: MachineController, cluster: cluster_pb2.Cluster | None, tools: Tools) -> None:
        self.c = controller
        self.cluster = cluster if cluster is not None else cluster_pb2.Cluster()
        self.tools = tools

    def context(self, obj: machine_pb2.Machine) -> MachineContext:
        return MachineContext(obj=obj, cluster=self.cluster, tools=self.tools)

    def gate(self, obj: machine_pb2.Machine) -> str | None:
        if self.cluster.status.phase != cluster_pb2.CLUSTER_PHASE_RUNNING:
            return f"waiting for cluster {self.cluster.metadata.name} to be Running"
        return None

    def needs_upgrade(self, obj: machine_pb2.Machine) -> bool:
        running = self.cluster.status.version.lstrip("v")
        kubelet = obj.status.node_info.kubelet_version.lstrip("v")
        return (
            bool(running)
            and self.cluster.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING
            and kubelet not in ("", running)
        )

    def on_created(self, obj: machine_pb2.Machine) -> None:
        # A provider that reads the Node has recorded the kubelet's own version.
        info = obj.status.node_info
        info.kubelet_version = info.kubelet_version or self.cluster.status.version or self.cluster.spec.version

    def on_upgraded(self, obj: machine_pb2.Machine) -> None:
        info = obj.status.node_info
        if info.kubelet_version.lstrip("v") != self.cluster.status.version.lstrip("v"):
            info.kubelet_version = self.cluster.status.version

    def pre_delete_steps(self) -> Sequence[Step[Any]]:
        return [Step("ReleaseUpgradeSlot", self._release_slot, max_retries=100)]

    def upgrade_plan(self, steps: Sequence[Step[Any]]) -> Sequence[Step[Any]]:
        return [
            # Waiting for another machine's upgrade is no failure: a large budget of short waits.
            Step("AcquireUpgradeSlot", self._acquire_slot, max_retries=100_000),
            *steps,
            Step("ReleaseUpgradeSlot", self._release_slot, max_retries=100),
        ]

    async def _acquire_slot(self, ctx: MachineContext) -> None:
        me = ctx.obj.metadata.name
        cluster = await self.c.clusters.get(ctx.obj.metadata.tenant_id, ctx.obj.spec.cluster_name)
        holder = cluster.metadata.annotations.get(UPGRADE_SLOT, "")
        if holder == me:
            return
        if holder:
            raise TemporaryError(f"waiting: machine {holder} of the cluster is upgrading", delay=3.0)
        cluster.metadata.annotations[UPGRADE_SLOT] = me
        try:
            await self.c.clusters.update(cluster)  # ABORTED if anyone changed it since the read
        except grpc.aio.AioRpcError as err:
            raise TemporaryError(
                f"the cluster changed while taking its upgrade slot: {err.code().name}", delay=0.5
            ) from None

    async def _release_slot(self, ctx: MachineContext) -> None:
        me = ctx.obj.metadata.name
        try:
            cluster = await self.c.clusters.get(ctx.obj.metadata.tenant_id, ctx.obj.spec.cluster_name)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise
        if cluster.metadata.annotations.get(UPGRADE_SLOT) != me:
            return
        del cluster.metadata.annotations[UPGRADE_SLOT]
        try:
            await self.c.clusters.update(cluster)
        except grpc.aio.AioRpcError as err:
            raise TemporaryError(f"the cluster changed while giving its upgrade slot back: {err.code().name}") from None
