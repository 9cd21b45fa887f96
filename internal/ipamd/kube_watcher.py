"""The workload watcher (galaxy-ipam's job): follows the cluster's Pods, StatefulSets,
Deployments and ReplicaSets through the Kubernetes API and gives back the addresses nobody
will use again: those of deleted workloads, of the pods a StatefulSet scaled down past, of the
retained addresses beyond what a Deployment keeps, and of gone pods whose CNI DEL never came (a
backstop for the pod-delete policy). What to release is the pure policy of
tke.internal.ipamd.reclaim; this module supplies the facts and acts.

How it follows the API, per kind: a list (which fills its cache), then one watch after another
from the last resource version, with bookmarks. A watch whose resource version the server no
longer keeps (410) means a new list and a resync: every allocation in the storage is examined
against the fresh lists. The resource version up to which every event has been handled is saved
in the IP storage (at most every `cursor_interval` seconds, and on a clean stop), so that after
a restart the watcher lists (to fill its cache) and then watches from there: the changes it
missed arrive as events, and no resync is needed unless the server forgot them.

Races, and why no address of a live pod is ever released:
- Every decision is made twice: first from the cache, then, for the addresses it would release,
  again from a fresh read of the API (GET of the pod and of the workload). A pod that exists, by
  name, keeps its fixed address; only the API saying "404" for a pod lets its address go. An API
  that cannot be reached decides nothing: the event is handled again after a backoff, from the
  same resource version. So reconnecting after an outage never releases in bulk: each address
  still needs its own 404.
- The release itself compares the allocation at the version the decision read
  (IPAM.reclaim): a pod that came back and attached its address between the API's answer and the
  release keeps it. What remains is the window between that answer and a pod of the same name
  created later (a StatefulSet scaled down and up again within milliseconds): the new pod then
  gets a new address, as after a scale-down that took effect.
- A pod force-deleted while its containers still run (a partitioned node) is gone for the API:
  its pod-delete address is released while the container may still hold it. The release
  cooldown keeps the address from a new owner meanwhile, as the kubelet tears the container
  down; that is the price of force deletion, as in Kubernetes itself.
- Several watchers (replicas of a Deployment) need no leader: every action is idempotent and
  compared, and any replica's saved resource version is one up to which some replica handled
  every event.
The watcher never releases a NEVER address, nor a fixed address of a workload kind it does not
watch (Job, DaemonSet, ...: their existence is unknown to it; ReleaseWorkload frees those).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from lightkube.resources.apps_v1 import Deployment, ReplicaSet, StatefulSet
from lightkube.resources.core_v1 import Pod

from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.reclaim import UNKNOWN, Release, WorkloadState, to_release
from tke.internal.ipamd.storage import StorageUnavailable, Stored
from tke.internal.ipamd.workloads import (
    DEPLOYMENT,
    POD,
    REPLICA_SET,
    STATEFUL_SET,
    OwnerRef,
    Workload,
    controller_of,
    owner_refs,
    workload_of,
)
from tke.internal.provider.errors import StepError
from tke.internal.provider.kube.api import ClusterAPI, WatchEvent, WatchExpired
from tke.internal.rpc.errors import ApiError
from tke.ipam.v1 import ipam_pb2

log = logging.getLogger("tke.ipamd.watcher")

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
GONE_REPLICA_SETS = 4096
# The label the Deployment controller puts on its ReplicaSets' pods; a ReplicaSet is named
# "<deployment>-<pod-template-hash>".
TEMPLATE_HASH = "pod-template-hash"


@dataclass(frozen=True)
class Watched:
    cursor: str  # the name of its saved resource version
    resource: type[Any]
    kind: str


PODS = Watched("pods", Pod, POD)
WATCHED = (
    PODS,
    Watched("statefulsets", StatefulSet, STATEFUL_SET),
    Watched("deployments", Deployment, DEPLOYMENT),
    Watched("replicasets", ReplicaSet, REPLICA_SET),
)
WORKLOAD_RESOURCES = {w.kind: w.resource for w in WATCHED if w.kind != POD}


def _meta(obj: Any) -> tuple[str, str]:
    meta = obj.metadata
    return str(meta.namespace or ""), str(meta.name or "")


def _replicas(obj: Any) -> int:
    spec = getattr(obj, "spec", None)
    replicas = getattr(spec, "replicas", None)
    return 1 if replicas is None else int(replicas)  # Kubernetes' default


class WorkloadWatcher:
    def __init__(
        self,
        api: ClusterAPI,
        ipam: IPAM,
        *,
        cursor_interval: float = 5.0,
        watch_timeout: int = 300,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        page_size: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.ipam = ipam
        self.storage = ipam.storage
        self.cursor_interval = cursor_interval
        self.watch_timeout = watch_timeout
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.page_size = page_size
        self.clock = clock
        # The cache: pod uids by (namespace, name); workloads' desired replicas; ReplicaSets'
        # controllers. Filled by the lists, kept by the watches.
        self.pods: dict[tuple[str, str], str] = {}
        self.workloads: dict[tuple[str, str, str], int] = {}
        self.replica_sets: dict[tuple[str, str], OwnerRef | None] = {}
        # Those of ReplicaSets deleted lately: their pods' deletions may come after theirs.
        self.gone_replica_sets: OrderedDict[tuple[str, str], OwnerRef | None] = OrderedDict()
        self.cursors: dict[str, str] = {}
        self._saved: dict[str, tuple[str, float]] = {}
        # What it did, for logs, metrics and tests.
        self.stats: Counter[str] = Counter()
        self.released: deque[tuple[ipam_pb2.Allocation, str]] = deque(maxlen=256)  # the latest
        self.synced = asyncio.Event()

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled. Never raises for an unreachable API or storage: it waits and
        tries again."""
        resumed = await self._retrying("start", self._start)
        log.info(
            "workload watcher %s",
            "resumed from its saved resource versions" if resumed else "listed the cluster and resynced",
        )
        self.synced.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                for w in WATCHED:
                    tasks.create_task(self._follow(w), name=f"watch {w.cursor}")
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._save_all()

    async def _start(self) -> bool:
        """List every kind (the cache); resume from the saved resource versions when all are
        there, else resync and start from the lists. True when it resumed."""
        saved = {w.cursor: await self.storage.watch_cursor(w.cursor) for w in WATCHED}
        listed = {w.cursor: await self._list(w) for w in WATCHED}
        if all(saved.values()):
            self.cursors = saved
            return True
        await self.resync()
        self.cursors = listed
        await self._save_all()
        return False

    async def _retrying(self, what: str, step: Callable[[], Any]) -> Any:
        """`step` until it succeeds: the API or the storage unreachable, or refusing (a missing
        permission), is logged and tried again after a growing delay, never fatal."""
        failures = 0
        while True:
            try:
                return await step()
            except (StepError, StorageUnavailable, ApiError) as err:
                failures += 1
                delay = min(self.backoff_cap, self.backoff_base * 2 ** min(failures - 1, 16))
                delay *= random.uniform(0.8, 1.2)  # replicas restarting together spread out
                message = err.message if isinstance(err, ApiError) else str(err)
                log.warning("workload watcher: %s: %s; again in %.1fs", what, message, delay)
                self.stats["retries"] += 1
                await asyncio.sleep(delay)

    async def _follow(self, w: Watched) -> None:
        relist = False

        async def once() -> None:
            nonlocal relist
            if relist:
                self.cursors[w.cursor] = await self._list(w)
                await self.resync()
                await self._save(w, force=True)
                relist = False
            events = self.api.watch(
                w.resource, resource_version=self.cursors[w.cursor], timeout_seconds=self.watch_timeout
            )
            try:
                async with contextlib.aclosing(events):
                    async for event in events:
                        if event.type != "BOOKMARK":
                            await self._handle(w, event)
                            self.stats["events"] += 1
                        self.cursors[w.cursor] = event.resource_version or self.cursors[w.cursor]
                        await self._save(w)
            except WatchExpired:
                log.info("workload watcher: the %s watch expired; listing again", w.cursor)
                relist = True

        while True:
            await self._retrying(f"watch {w.cursor}", once)

    async def _list(self, w: Watched) -> str:
        items, version = await self.api.list_objects(w.resource)
        if w is PODS:
            self.pods = {_meta(p): str(p.metadata.uid or "") for p in items}
        else:
            for key in [k for k in self.workloads if k[0] == w.kind]:
                del self.workloads[key]
            for obj in items:
                self._remember(w, obj)
        return version

    async def _save(self, w: Watched, force: bool = False) -> None:
        value = self.cursors[w.cursor]
        last, at = self._saved.get(w.cursor, ("", float("-inf")))
        if value and value != last and (force or self.clock() - at >= self.cursor_interval):
            await self.storage.put_watch_cursor(w.cursor, value)
            self._saved[w.cursor] = (value, self.clock())

    async def _save_all(self) -> None:
        for w in WATCHED:
            if w.cursor in self.cursors:
                await self._save(w, force=True)

    # -- the cache ----------------------------------------------------------------------------

    def _remember(self, w: Watched, obj: Any) -> None:
        namespace, name = _meta(obj)
        if w.kind == REPLICA_SET:
            ref = controller_of(owner_refs(obj.metadata))
            self.replica_sets[(namespace, name)] = ref
            if ref is not None and ref.kind == DEPLOYMENT:
                return  # a Deployment's: not a workload of its own
        self.workloads[(w.kind, namespace, name)] = _replicas(obj)

    def _cached_state(self, w: Workload) -> WorkloadState:
        if w.kind == POD:
            return WorkloadState(exists=(w.namespace, w.name) in self.pods)
        if w.kind not in WORKLOAD_RESOURCES:
            return UNKNOWN
        replicas = self.workloads.get((w.kind, w.namespace, w.name))
        return WorkloadState(exists=replicas is not None, replicas=replicas)

    # -- events -------------------------------------------------------------------------------

    async def _handle(self, w: Watched, event: WatchEvent) -> None:
        obj = event.object
        namespace, name = _meta(obj)
        if w is PODS:
            uid = str(obj.metadata.uid or "")
            if event.type != "DELETED":
                self.pods[(namespace, name)] = uid
                return
            if self.pods.get((namespace, name)) == uid:
                del self.pods[(namespace, name)]
            await self._pod_gone(obj)
            return
        key = (w.kind, namespace, name)
        before = self.workloads.get(key)
        if event.type == "DELETED":
            self.workloads.pop(key, None)
            if w.kind == REPLICA_SET:
                self.gone_replica_sets[(namespace, name)] = self.replica_sets.pop((namespace, name), None)
                while len(self.gone_replica_sets) > GONE_REPLICA_SETS:
                    self.gone_replica_sets.popitem(last=False)
        else:
            self._remember(w, obj)
        after = self.workloads.get(key)
        # A workload deleted or scaled down (or one it did not know: a replayed event after a
        # restart); not every status update.
        if event.type == "DELETED" or before is None or (after is not None and after < before):
            await self._examine(
                Workload(namespace, w.kind, name), await self.storage.by_workload(namespace, w.kind, name)
            )

    async def _pod_gone(self, pod: Any) -> None:
        namespace, name = _meta(pod)
        node = str(getattr(pod.spec, "nodeName", "") or "")
        # Its attached addresses are on its node; its fixed ones (retained after its DEL, which
        # by_node leaves out) are its workload's.
        on_node = await self.storage.by_node(node) if node else []
        mine = [s for s in on_node if (s.allocation.owner.namespace, s.allocation.owner.pod_name) == (namespace, name)]
        fixed = []
        for w in self._workloads_of(pod):
            fixed += await self.storage.by_workload(w.namespace, w.kind, w.name)
        groups: dict[Workload, dict[str, Stored]] = defaultdict(dict)
        for s in [*mine, *fixed]:
            o = s.allocation.owner
            groups[Workload(o.namespace, o.workload_kind, o.workload_name)][
                f"{s.allocation.pool}/{s.allocation.ip}"
            ] = s
        for workload, stored in groups.items():
            await self._examine(workload, list(stored.values()))

    def _workloads_of(self, pod: Any) -> list[Workload]:
        """Where the fixed addresses of a deleted pod may be recorded: its workload, resolved
        from the ReplicaSets the watcher knows. When its ReplicaSet is unknown (deleted while the
        watcher was away), the Deployment the ReplicaSet's name and the pod's template hash
        point to is looked at too: only addresses recorded under it are found there, and each
        is still decided against the API."""
        namespace, name = _meta(pod)
        refs = owner_refs(pod.metadata)
        ref = controller_of(refs)
        if ref is None or ref.kind != REPLICA_SET:
            return [workload_of(namespace, name, refs, lambda _: None)]
        key = (namespace, ref.name)
        if key in self.replica_sets or key in self.gone_replica_sets:
            parent = self.replica_sets[key] if key in self.replica_sets else self.gone_replica_sets[key]
            return [workload_of(namespace, name, refs, lambda _: parent)]
        out = [Workload(namespace, REPLICA_SET, ref.name)]
        suffix = "-" + str((pod.metadata.labels or {}).get(TEMPLATE_HASH, ""))
        if len(suffix) > 1 and ref.name.endswith(suffix):
            out.append(Workload(namespace, DEPLOYMENT, ref.name.removesuffix(suffix)))
        return out

    async def resync(self) -> None:
        """Examine every allocation against the cache (fresh from the lists)."""
        groups: dict[Workload, list[Stored]] = defaultdict(list)
        cursor = ""
        while True:
            page, cursor = await self.storage.allocations("", cursor, self.page_size)
            for s in page:
                o = s.allocation.owner
                groups[Workload(o.namespace, o.workload_kind, o.workload_name)].append(s)
            if not cursor:
                break
        for workload, stored in groups.items():
            await self._examine(workload, stored)
        self.stats["resyncs"] += 1

    # -- deciding and acting --------------------------------------------------------------------

    async def _examine(self, w: Workload, stored: list[Stored]) -> None:
        if not stored:
            return

        def cached_uid(name: str) -> str | None:
            return self.pods.get((w.namespace, name))

        first = to_release(stored, self._cached_state(w), cached_uid)
        if not first:
            return
        # Again, from the API itself: only its 404 lets an address go.
        names = {r.stored.allocation.owner.pod_name for r in first}
        fresh = {name: await self._pod_uid(w.namespace, name) for name in names}
        state = await self._state(w)

        def uid(name: str) -> str | None:
            return fresh[name] if name in fresh else cached_uid(name)

        chosen = {id(r.stored) for r in first}
        for r in to_release(stored, state, uid):
            if id(r.stored) in chosen:
                await self._release(r)

    async def _pod_uid(self, namespace: str, name: str) -> str | None:
        pod = await self.api.get(Pod, name, namespace)
        if pod is None:
            return None
        return str(pod.metadata.uid or "") if pod.metadata else ""

    async def _state(self, w: Workload) -> WorkloadState:
        if w.kind == POD:
            return WorkloadState(exists=await self._pod_uid(w.namespace, w.name) is not None)
        resource = WORKLOAD_RESOURCES.get(w.kind)
        if resource is None:
            return UNKNOWN
        obj = await self.api.get(resource, w.name, w.namespace)
        if obj is None:
            return WorkloadState(exists=False)
        if w.kind == REPLICA_SET:
            ref = controller_of(owner_refs(obj.metadata))
            if ref is not None and ref.kind == DEPLOYMENT:
                return UNKNOWN  # adopted by a Deployment since: not this watcher's call
        return WorkloadState(exists=True, replicas=_replicas(obj))

    async def _release(self, r: Release) -> None:
        a = r.stored.allocation
        try:
            done = await self.ipam.reclaim(r.stored)
        except ApiError as err:
            if err.code in RETRYABLE:
                raise
            log.warning("workload watcher: could not release %s/%s of %s: %s", a.pool, a.ip, a.owner.pod_name,
                        err.message)  # fmt: skip
            self.stats["refused"] += 1
            return
        if done:
            log.info("released %s/%s of pod %s/%s: %s", a.pool, a.ip, a.owner.namespace, a.owner.pod_name, r.reason)
            self.stats["released"] += 1
            self.released.append((a, r.reason))
