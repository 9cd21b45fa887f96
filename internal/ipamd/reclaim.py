"""Which addresses of a workload may go back to their pools, from what Kubernetes says about
the workload and its pods: the workload watcher's policy (galaxy-ipam's), apart from any I/O.

For the allocations of one workload (same namespace, kind and name), given whether the workload
exists and how many replicas it wants, and which of its pods exist now (by name, with the uid of
the existing pod), an allocation is released when:
- its policy is POD_DELETE and its pod is gone, or was replaced by a pod of the same name but
  another uid (the old sandbox's DEL never came: a dead node, a force deletion);
- its policy is IMMUTABLE, its pod (any incarnation) is gone, and
  - the workload is gone (deleted; for a bare pod, the pod is the workload), or
  - the workload is a StatefulSet and the pod's ordinal is at or above the replicas it wants, or
  - the workload's pods get new names (Deployment, bare ReplicaSet): it keeps as many addresses
    as it wants replicas, those of existing pods first, then the gone pods' by address; the rest
    go.
Never: an allocation whose pod exists (by name, for a fixed address: the pod will reattach it);
a NEVER address (only ReleaseWorkload with force frees those); a fixed address of a workload of a
kind the watcher cannot see (its existence and size are unknown: WorkloadState.unknown).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tke.internal.ipamd.bindings import ordinal
from tke.internal.ipamd.keys import address_key
from tke.internal.ipamd.storage import Stored
from tke.internal.ipamd.workloads import POD, STATEFUL_SET
from tke.ipam.v1 import ipam_pb2

IMMUTABLE = ipam_pb2.RELEASE_POLICY_IMMUTABLE
NEVER = ipam_pb2.RELEASE_POLICY_NEVER


@dataclass(frozen=True)
class WorkloadState:
    """What the API says of a workload: whether it exists, and its desired replicas (None for
    kinds without, or when unknown)."""

    exists: bool
    replicas: int | None = None
    # The watcher cannot read this kind: nothing fixed of it is released.
    unknown: bool = False


UNKNOWN = WorkloadState(exists=True, unknown=True)


@dataclass(frozen=True)
class Release:
    stored: Stored
    reason: str


def to_release(
    allocations: Sequence[Stored], workload: WorkloadState, pod_uid: Callable[[str], str | None]
) -> list[Release]:
    """The allocations of one workload to release. `pod_uid(name)` is the uid of the existing
    pod of that name in the workload's namespace, None when there is none."""
    out: list[Release] = []
    shared: list[Stored] = []  # fixed addresses of gone pods of a workload whose pods get new names
    held = 0  # fixed addresses of that workload's existing pods
    for s in allocations:
        a = s.allocation
        uid = pod_uid(a.owner.pod_name)
        if a.release_policy not in (IMMUTABLE, NEVER):
            if uid is None:
                out.append(Release(s, f"pod {a.owner.namespace}/{a.owner.pod_name} is gone"))
            elif a.owner.pod_uid and uid != a.owner.pod_uid:
                out.append(Release(s, f"pod {a.owner.namespace}/{a.owner.pod_name} was replaced (uid {uid})"))
            continue
        if a.release_policy == NEVER or workload.unknown:
            continue
        if uid is not None:
            held += 1
            continue
        kind = a.owner.workload_kind
        if not workload.exists or kind == POD:
            out.append(Release(s, f"{kind} {a.owner.namespace}/{a.owner.workload_name} was deleted"))
        elif kind == STATEFUL_SET:
            n = ordinal(a.owner.pod_name, a.owner.workload_name)
            if workload.replicas is not None and n is not None and n >= workload.replicas:
                out.append(Release(s, f"{kind} {a.owner.namespace}/{a.owner.workload_name} scaled down to "
                                      f"{workload.replicas}"))  # fmt: skip
        elif workload.replicas is not None:
            shared.append(s)
    if shared:
        replicas = workload.replicas or 0
        shared.sort(key=lambda s: address_key(s.allocation.ip))
        for s in shared[max(0, replicas - held) :]:
            a = s.allocation
            out.append(Release(s, f"{a.owner.workload_kind} {a.owner.namespace}/{a.owner.workload_name} keeps "
                                  f"{replicas} addresses"))  # fmt: skip
    return out
