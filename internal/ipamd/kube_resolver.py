"""The WorkloadResolver over the cluster's Kubernetes API: a pod's workload from its
ownerReferences (tke.internal.ipamd.workloads), reading the pod and, for a ReplicaSet's pod, the
ReplicaSet (whose controller may be a Deployment).

What it reads is cached briefly and in bounded memory: a pod's answer for `pod_ttl` seconds (a
CNI ADD asks twice within milliseconds: cni-switch's LookupBinding, then tke-ipamc's Allocate), a
ReplicaSet's controller for `replica_set_ttl` seconds (it changes only when a ReplicaSet is
adopted or orphaned). A failure of the API is ResolverUnavailable, never an answer.

Where a pod is bound and whose it is (`placement_of`, for the node rule) is never cached: it is
one GET of the pod each time (a quorum read in kube-apiserver), and one of its ReplicaSet when
it has one, because a StatefulSet's pod deleted on one node and created again on another within
the cache's lifetime would otherwise still look bound to the first, or, worse, to a node it has
left; and a pod created again by another controller would still look like the first one's. What
it reads replaces what the caches held, so the next `workload_of` agrees with it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from lightkube.resources.apps_v1 import ReplicaSet
from lightkube.resources.core_v1 import Pod

from tke.internal.ipamd.workloads import (
    REPLICA_SET,
    OwnerRef,
    PodPlacement,
    ResolverUnavailable,
    Workload,
    controller_of,
    owner_refs,
    workload_of,
)
from tke.internal.provider.errors import StepError
from tke.internal.provider.kube.api import ClusterAPI

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """At most `capacity` entries, each kept `ttl` seconds; the oldest go first."""

    def __init__(self, ttl: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.capacity, self.clock = ttl, capacity, clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        hit = self._items.get(key)
        if hit is None or hit[0] < self.clock():
            self._items.pop(key, None)
            return False, None
        return True, hit[1]

    def put(self, key: K, value: V) -> None:
        self._items[key] = (self.clock() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class KubeResolver:
    def __init__(
        self,
        api: ClusterAPI,
        *,
        pod_ttl: float = 5.0,
        replica_set_ttl: float = 60.0,
        capacity: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self._pods: TTLCache[tuple[str, str], Workload | None] = TTLCache(pod_ttl, capacity, clock)
        self._replica_sets: TTLCache[tuple[str, str], OwnerRef | None] = TTLCache(replica_set_ttl, capacity, clock)

    async def workload_of(self, namespace: str, pod_name: str) -> Workload | None:
        hit, known = self._pods.get((namespace, pod_name))
        if hit:
            return known
        found = await self._read(namespace, pod_name, fresh=False)
        return found.workload if found is not None else None

    async def placement_of(self, namespace: str, pod_name: str) -> PodPlacement | None:
        return await self._read(namespace, pod_name, fresh=True)

    async def _read(self, namespace: str, pod_name: str, *, fresh: bool) -> PodPlacement | None:
        """The pod as the API says now (its ReplicaSet's controller too when `fresh`, else
        from the cache), remembered for `workload_of`."""
        try:
            pod = await self.api.get(Pod, pod_name, namespace)
            if pod is None:
                found = None
            else:
                refs = owner_refs(pod.metadata)
                ref = controller_of(refs)
                parent = (
                    await self.replica_set_controller(namespace, ref.name, fresh=fresh)
                    if ref and ref.kind == REPLICA_SET
                    else None
                )
                uid = (pod.metadata.uid if pod.metadata else None) or ""
                node = (pod.spec.nodeName if pod.spec else None) or ""
                found = PodPlacement(str(uid), str(node), workload_of(namespace, pod_name, refs, lambda _: parent))
        except StepError as err:
            raise ResolverUnavailable(str(err)) from None
        self._pods.put((namespace, pod_name), found.workload if found is not None else None)
        return found

    async def replica_set_controller(self, namespace: str, name: str, *, fresh: bool = False) -> OwnerRef | None:
        """The controller of a ReplicaSet (a Deployment, usually), None when it has none or is
        gone; `fresh`: read from the API even when cached. Raises the access layer's errors."""
        hit, known = self._replica_sets.get((namespace, name))
        if hit and not fresh:
            return known
        rs = await self.api.get(ReplicaSet, name, namespace)
        found = controller_of(owner_refs(rs.metadata)) if rs is not None else None
        self._replica_sets.put((namespace, name), found)
        return found
