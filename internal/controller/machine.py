"""The machine controller: drives each Machine through its provider's plans (lifecycle.py).

A machine's create steps wait until its cluster is Running (they join it); the machine's
upgrade runs when the cluster's running version differs from the machine's kubelet version.
A machine whose cluster is gone is released without teardown (there is nothing to leave).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tke.internal.controller.cache import object_key
from tke.internal.controller.client import ResourceClient
from tke.internal.controller.events import Recorder
from tke.internal.controller.informer import Informer
from tke.internal.controller.lifecycle import Phases
from tke.internal.controller.progress import RetryPolicy
from tke.internal.controller.reconciler import Reconciler
from tke.internal.provider.contract import MachineContext, MachineProvider, Toolbox, Tools, reconcile_tools
from tke.internal.provider.steps import Step
from tke.platform.v1 import cluster_pb2, machine_pb2

FINALIZER = "tke.cloud/machine-provider"
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
        running = self.cluster.status.version
        return (
            bool(running)
            and self.cluster.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING
            and obj.status.node_info.kubelet_version not in ("", running)
        )

    def on_created(self, obj: machine_pb2.Machine) -> None:
        obj.status.node_info.kubelet_version = self.cluster.status.version or self.cluster.spec.version

    def on_upgraded(self, obj: machine_pb2.Machine) -> None:
        obj.status.node_info.kubelet_version = self.cluster.status.version

    def pre_delete_steps(self) -> Sequence[Step[Any]]:
        return []
