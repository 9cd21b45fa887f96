"""A pod's workload, from Kubernetes' ownerReferences: the object whose controller makes the
pod, which is what a binding names and what owns a fixed address.

The rule (galaxy-ipam's): the pod's controller reference (the ownerReference with
`controller: true`) names it, except that a ReplicaSet controlled by a Deployment stands for
that Deployment (a Deployment's pods come from its ReplicaSets, whose names change with every
rollout). A StatefulSet, a Job, a DaemonSet, a bare ReplicaSet or any other controller is the
workload itself; a pod without a controller is its own workload (kind "Pod", its own name).
Never a guess from the pod's name.

The seam: `WorkloadResolver` says which workload a pod (namespace, name) belongs to, for callers
that know only the pod (kubelet sends K8S_POD_NAMESPACE and K8S_POD_NAME). tke-ipamd resolves
through the cluster's Kubernetes API when configured with one (tke.internal.ipamd.kube_resolver);
without it every pod whose caller names no workload is a bare pod. It also says where a pod is
bound and whose it is (`placement_of`: its uid, spec.nodeName and workload, read from the API
at the moment of asking, never from a cache), which the node rule (tke.internal.ipamd.noderule)
needs before a node takes a fixed address: without an API that is `PodsUnknown`, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

POD = "Pod"
DEPLOYMENT = "Deployment"
REPLICA_SET = "ReplicaSet"
STATEFUL_SET = "StatefulSet"
# Kinds whose pods keep their names across restarts (a fixed address is per pod name); the pods
# of every other kind get new names, so their fixed addresses are shared by the workload.
STABLE_NAME_KINDS = frozenset({STATEFUL_SET, POD})


@dataclass(frozen=True)
class Workload:
    namespace: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class OwnerRef:
    """What resolution reads of an ownerReference."""

    kind: str
    name: str
    controller: bool = False


def controller_of(refs: Iterable[OwnerRef]) -> OwnerRef | None:
    """The controller reference among an object's ownerReferences (at most one has
    `controller: true`), None when it has none."""
    for ref in refs:
        if ref.controller and ref.kind and ref.name:
            return ref
    return None


def workload_of(
    namespace: str,
    pod_name: str,
    refs: Iterable[OwnerRef],
    replica_set_controller: Callable[[str], OwnerRef | None],
) -> Workload:
    """The workload of pod `namespace/pod_name` with ownerReferences `refs`.
    `replica_set_controller(name)` is the controller of the namespace's ReplicaSet `name` (None
    when it has none or is gone: the ReplicaSet then stands for itself)."""
    ref = controller_of(refs)
    if ref is None:
        return Workload(namespace, POD, pod_name)
    if ref.kind == REPLICA_SET:
        parent = replica_set_controller(ref.name)
        if parent is not None and parent.kind == DEPLOYMENT:
            return Workload(namespace, DEPLOYMENT, parent.name)
    return Workload(namespace, ref.kind, ref.name)


def owner_refs(meta: object) -> list[OwnerRef]:
    """The ownerReferences of a lightkube ObjectMeta (or anything with `ownerReferences`)."""
    return [
        OwnerRef(str(r.kind or ""), str(r.name or ""), bool(r.controller))
        for r in (getattr(meta, "ownerReferences", None) or [])
    ]


def owner_refs_of_json(meta: object) -> list[OwnerRef]:
    """The ownerReferences of an object's metadata as JSON (a dict), ignoring malformed ones."""
    refs = meta.get("ownerReferences") if isinstance(meta, dict) else None
    out = []
    for r in refs if isinstance(refs, list) else []:
        if isinstance(r, dict):
            out.append(OwnerRef(str(r.get("kind") or ""), str(r.get("name") or ""), r.get("controller") is True))
    return out


@dataclass(frozen=True)
class PodPlacement:
    """Which pod a name stands for now, where it is bound and whose it is: its uid, spec.nodeName
    ("" while the scheduler has not bound it) and its workload (`workload_of`)."""

    uid: str
    node: str
    workload: Workload


class ResolverUnavailable(Exception):
    """The Kubernetes API could not be asked (unreachable, timed out, refused us)."""


class PodsUnknown(Exception):
    """This tke-ipamd has no Kubernetes API: it cannot say where a pod is bound."""


class WorkloadResolver(Protocol):
    async def workload_of(self, namespace: str, pod_name: str) -> Workload | None:
        """The pod's workload; None when the cluster has no such pod (a container that is
        no Kubernetes pod, or one already gone); ResolverUnavailable when the API cannot
        answer now."""
        ...

    async def placement_of(self, namespace: str, pod_name: str) -> PodPlacement | None:
        """The pod's uid, node and workload as the API says at this moment (read, never cached:
        a pod deleted and created again on another node, or by another controller, is another
        answer at once; its ReplicaSet's controller is read again too); None when the
        cluster has no such pod; ResolverUnavailable when the API cannot answer now;
        PodsUnknown when there is no API to ask."""
        ...


class NoResolver:
    """tke-ipamd without a Kubernetes API: nothing is known about pods."""

    async def workload_of(self, namespace: str, pod_name: str) -> Workload | None:
        return None

    async def placement_of(self, namespace: str, pod_name: str) -> PodPlacement | None:
        raise PodsUnknown("tke-ipamd has no Kubernetes API ([kubernetes] is not configured)")
