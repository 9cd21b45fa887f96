"""PodDisruptionBudgets as Kubernetes' disruption controller and eviction subresource see them.

A PDB's status is recomputed whenever its pods, its spec, or the scale of its pods' controllers
change (the stand-in does this at once, the real controller soon after):
- expected pods: for minAvailable as a number, the pods the selector matches; for
  maxUnavailable or a percentage, the sum of the replicas of the pods' controllers (a
  ReplicaSet, through it its Deployment, or a StatefulSet). A pod without such a controller
  makes the PDB fail to sync (no disruption allowed), as in Kubernetes;
- healthy pods: matched pods that are Ready and not being deleted;
- desiredHealthy from minAvailable, or expected minus maxUnavailable (percentages round up);
- disruptionsAllowed = healthy - desiredHealthy, at least 0.
An eviction (eviction.py's caller in registry.py) is refused with 429 when the pod's PDB allows
no disruption; pods that are not running (Pending, Succeeded, Failed) or already being deleted
ignore PDBs, and an unhealthy pod may go when the budget is met (unhealthyPodEvictionPolicy
IfHealthyBudget, the default) or always (AlwaysAllow)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.kube.errors import StatusError
from tests.support.kube.selectors import selector_matches

Object = dict[str, Any]


@dataclass(frozen=True)
class Budget:
    expected: int
    desired: int
    healthy: int
    allowed: int
    failure: str = ""


def is_ready(pod: Object) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ready and not pod["metadata"].get("deletionTimestamp")


def matches(pdb: Object, pod: Object) -> bool:
    return selector_matches((pdb.get("spec") or {}).get("selector"), pod["metadata"].get("labels") or {})


def _scaled(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


def budget(pdb: Object, pods: list[Object], scale_of: Callable[[Object], tuple[str, int] | None]) -> Budget:
    """`scale_of(pod)`: (uid, replicas) of the controller whose scale covers the pod, or None."""
    spec = pdb.get("spec") or {}
    healthy = sum(1 for p in pods if is_ready(p))
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    if max_unavailable is None and (min_available is None or isinstance(min_available, int)):
        expected = len(pods)
        desired = int(min_available or 0)
    else:
        scales: dict[str, int] = {}
        for pod in pods:
            scale = scale_of(pod)
            if scale is None:
                failure = f'found no controllers for pod "{pod["metadata"]["name"]}"'
                return Budget(0, 0, healthy, 0, failure)
            scales[scale[0]] = scale[1]
        expected = sum(scales.values())
        if max_unavailable is not None:
            desired = max(0, expected - _scaled(max_unavailable, expected))
        else:
            desired = _scaled(min_available, expected)
    return Budget(expected, desired, healthy, max(0, healthy - desired))


def status(pdb: Object, b: Budget, now: str) -> Object:
    old = pdb.get("status") or {}
    allowed = b.allowed > 0 and not b.failure
    reason = "SyncFailed" if b.failure else ("SufficientPods" if allowed else "InsufficientPods")
    condition = {
        "type": "DisruptionAllowed",
        "status": "True" if allowed else "False",
        "reason": reason,
        "message": b.failure,
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "lastTransitionTime": now,
    }
    for c in old.get("conditions") or []:
        if c.get("type") == "DisruptionAllowed" and c.get("status") == condition["status"]:
            condition["lastTransitionTime"] = c.get("lastTransitionTime", now)
    out: Object = {
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "disruptionsAllowed": b.allowed if not b.failure else 0,
        "currentHealthy": b.healthy,
        "desiredHealthy": b.desired,
        "expectedPods": b.expected,
        "conditions": [condition],
    }
    return out


def check_eviction(pod: Object, pdbs: list[Object], budgets: Callable[[Object], Budget]) -> Object | None:
    """Whether `pod` may be evicted now: raises 429 (the budget allows no disruption) or 500
    (several PDBs match, which the eviction subresource does not support); returns the PDB whose
    budget the eviction uses, or None when none applies."""
    phase = (pod.get("status") or {}).get("phase", "")
    if phase in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp"):
        return None
    matching = [p for p in pdbs if matches(p, pod)]
    if not matching:
        return None
    if len(matching) > 1:
        message = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
        raise StatusError(500, "InternalError", message)
    pdb = matching[0]
    b = budgets(pdb)
    if not is_ready(pod):
        policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
        if policy == "AlwaysAllow" or (b.healthy >= b.desired > 0 and not b.failure):
            return None
    if b.allowed > 0 and not b.failure:
        return pdb
    needs = (
        f"The disruption budget {pdb['metadata']['name']} needs {b.desired} healthy pods and has {b.healthy} currently"
    )
    raise StatusError(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
        {
            "causes": [
                {
                    "reason": "DisruptionBudget",
                    "message": needs,
                }
            ]
        },
    )
