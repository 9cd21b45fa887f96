"""Draining a node through the Kubernetes API, as `kubectl drain` does: cordon it, then evict
every pod on it through the Eviction API (policy/v1), so that PodDisruptionBudgets decide when
each may go, and wait until they are gone.

- DaemonSet pods are left (their controller would put them back) and so are mirror pods (the
  kubelet's static pods, which the API cannot remove). Pods without a controller are evicted
  too: the node is going away.
- An eviction refused with 429 (the budget allows no disruption now) is asked again every
  `poll` seconds; a pod already being deleted is waited for.
- The whole drain is bounded by `within` seconds: past it, a TemporaryError names each pod that did not
  leave and why (the budget's message, or "terminating"), so the step retries later.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from lightkube.resources.core_v1 import Pod

from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.kube.api import ClusterAPI

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True)
class DrainResult:
    evicted: tuple[str, ...]
    # DaemonSet and mirror pods, left on the node.
    skipped: tuple[str, ...]


def _key(pod: Pod) -> str:
    meta = pod.metadata
    return f"{meta.namespace}/{meta.name}" if meta else "?"


def stays(pod: Pod) -> bool:
    """Whether a drain leaves the pod: owned by a DaemonSet, or a mirror pod."""
    meta = pod.metadata
    if meta is None:
        return False
    if MIRROR_ANNOTATION in (meta.annotations or {}):
        return True
    return any(ref.controller and ref.kind == "DaemonSet" for ref in meta.ownerReferences or [])


async def drain(api: ClusterAPI, node: str, *, within: float = 300.0, poll: float = 1.0) -> DrainResult:
    """Drain `node` in at most `within` seconds, asking again every `poll` seconds."""
    deadline = time.monotonic() + within
    await api.set_unschedulable(node, True)
    pods = await api.pods_on(node)
    skipped = tuple(sorted(_key(p) for p in pods if stays(p)))
    # uid -> pod, for the pods still to go; a pod recreated under the same name is another one.
    waiting = {p.metadata.uid: p for p in pods if not stays(p) and p.metadata and p.metadata.uid}
    evicted = tuple(sorted(_key(p) for p in waiting.values()))
    why: dict[str, str] = {}
    while True:
        for uid, pod in waiting.items():
            if pod.metadata and pod.metadata.deletionTimestamp:
                why[uid] = "terminating"
            elif why.get(uid) != "eviction accepted":
                refused = await api.evict(pod)
                why[uid] = refused or "eviction accepted"
        present = {p.metadata.uid: p for p in await api.pods_on(node) if p.metadata}
        waiting = {uid: present[uid] for uid in waiting if uid in present}
        if not waiting:
            return DrainResult(evicted, skipped)
        left = deadline - time.monotonic()
        if left <= 0:
            stuck = ", ".join(
                f"{_key(p)} ({why.get(uid, 'not evicted yet')})"
                for uid, p in sorted(waiting.items(), key=lambda i: _key(i[1]))
            )
            raise TemporaryError(f"draining node {node} timed out after {within:g}s; pods that did not leave: {stuck}")
        await asyncio.sleep(min(poll, left))
