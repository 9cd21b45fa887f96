"""The cluster controller: drives each Cluster through its provider's plans (lifecycle.py).

Before the provider's delete steps, the controller deletes the cluster's Machine resources
and waits until they are gone (step DeleteMachines), so that every machine's own teardown
runs while the cluster still exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tke.internal.controller.cache import by_cluster, object_key
from tke.internal.controller.client import ResourceClient
from tke.internal.controller.events import WARNING, Recorder
from tke.internal.controller.informer import Change, Informer
from tke.internal.controller.lifecycle import Phases
from tke.internal.controller.progress import RetryPolicy
from tke.internal.controller.reconciler import Reconciler
from tke.internal.provider.contract import ClusterContext, ClusterProvider, Toolbox, Tools, reconcile_tools
from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.steps import Step
from tke.platform.v1 import cluster_pb2, machine_pb2

FINALIZER = "tke.cloud/cluster-provider"
PHASES = Phases(
    initializing=cluster_pb2.CLUSTER_PHASE_INITIALIZING,
    running=cluster_pb2.CLUSTER_PHASE_RUNNING,
    failed=cluster_pb2.CLUSTER_PHASE_FAILED,
    terminating=cluster_pb2.CLUSTER_PHASE_TERMINATING,
    upgrading=cluster_pb2.CLUSTER_PHASE_UPGRADING,
    scaling=cluster_pb2.CLUSTER_PHASE_SCALING,
)


class ClusterController(Reconciler[cluster_pb2.Cluster, ClusterProvider]):
    def __init__(
        self,
        clusters: ResourceClient[cluster_pb2.Cluster],
        machines: ResourceClient[machine_pb2.Machine],
        cluster_informer: Informer[cluster_pb2.Cluster],
        machine_informer: Informer[machine_pb2.Machine],
        *,
        providers: dict[str, ClusterProvider],
        tools: Toolbox,
        recorder: Recorder,
        policy: RetryPolicy,
        health_interval: float = 60.0,
    ) -> None:
        super().__init__(
            clusters,
            cluster_informer,
            finalizer=FINALIZER,
            phases=PHASES,
            providers=providers,
            tools=tools,
            recorder=recorder,
            policy=policy,
            health_interval=health_interval,
        )
        self.machines = machines
        self.machine_informer = machine_informer
        machine_informer.add_handler(self._machine_changed)

    def _machine_changed(self, change: Change, machine: machine_pb2.Machine) -> None:
        # A cluster being deleted waits for its machines to go.
        if change is Change.DELETED:
            self.queue.add(by_cluster(machine)[0])

    def machines_of(self, cluster: cluster_pb2.Cluster) -> list[machine_pb2.Machine]:
        return self.machine_informer.cache.by_index("cluster", object_key(cluster))

    async def reconcile(self, key: str) -> float | None:
        copies = self.working_copy(key)
        if copies is None:
            return None
        cached, obj = copies
        provider = self.providers.get(obj.spec.type)
        if provider is None and not obj.metadata.HasField("deletion_timestamp"):
            if obj.status.reason != "UnknownProvider":
                self.recorder.record(
                    obj, "Cluster", WARNING, "UnknownProvider", f"no cluster provider {obj.spec.type!r}"
                )
                await self.fail_unknown_provider(cached, obj)
            return None
        async with reconcile_tools(self.tools, obj.metadata.tenant_id) as tools:
            return await self.lifecycle.reconcile(obj, provider, _Adapter(self, tools))


class _Adapter:
    def __init__(self, controller: ClusterController, tools: Tools) -> None:
        self.c = controller
        self.tools = tools

    def context(self, obj: cluster_pb2.Cluster) -> ClusterContext:
        return ClusterContext(obj=obj, machines=self.c.machines_of(obj), tools=self.tools)

    def gate(self, obj: cluster_pb2.Cluster) -> str | None:
        return None

    def needs_upgrade(self, obj: cluster_pb2.Cluster) -> bool:
        return bool(obj.spec.version) and obj.spec.version != obj.status.version

    def on_created(self, obj: cluster_pb2.Cluster) -> None:
        # A provider that observes the version (imported) has recorded it already.
        obj.status.version = obj.status.version or obj.spec.version

    def on_upgraded(self, obj: cluster_pb2.Cluster) -> None:
        obj.status.version = obj.spec.version

    def upgrade_plan(self, steps: Sequence[Step[Any]]) -> Sequence[Step[Any]]:
        return steps

    def pre_delete_steps(self) -> Sequence[Step[Any]]:
        return [Step("DeleteMachines", self._delete_machines, timeout=120, max_retries=1000)]

    async def _delete_machines(self, ctx: ClusterContext) -> None:
        machines = self.c.machines_of(ctx.obj)
        for m in machines:
            if not m.metadata.HasField("deletion_timestamp"):
                await self.c.machines.delete(m.metadata.tenant_id, m.metadata.name)
        if machines:
            names = ", ".join(sorted(m.metadata.name for m in machines))
            raise TemporaryError(f"waiting for {len(machines)} machines to be deleted: {names}", delay=1.0)
