"""The DaemonSet and Deployment controllers, with the scheduler and the kubelets behind them, as
far as their status goes, for tests whose cluster is the Kubernetes API stand-in (which runs no
controller): a DaemonSet wants a pod on every registered Node (the platform's add-on tolerates
every taint) and has one ready on each Ready Node; a Deployment has its replicas ready once a
Node is Ready. Status is written only when it changes, so an object nobody changes keeps its
resource version (what the add-on's idempotence is checked by)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightkube.core.resource_registry import resource_registry
from lightkube.resources.apps_v1 import DaemonSet, Deployment
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from tke.internal.provider.kube.api import ClusterAPI as KubeClient


async def play(api: KubeClient) -> None:
    """One look at the cluster: every DaemonSet's and Deployment's status brought up to date."""
    nodes = (await api.list_objects(Node))[0]
    ready = len([n for n in nodes if n.status and any(c.type == "Ready" and c.status == "True"
                                                      for c in n.status.conditions or [])])  # fmt: skip
    for ds in (await api.list_objects(DaemonSet))[0]:
        n = len(nodes)
        status = {"desiredNumberScheduled": n, "currentNumberScheduled": n, "updatedNumberScheduled": n,
                  "numberReady": ready, "numberAvailable": ready, "numberMisscheduled": 0}  # fmt: skip
        await _status(api, DaemonSet, ds, status)
    for d in (await api.list_objects(Deployment))[0]:
        want = d.spec.replicas if d.spec and d.spec.replicas is not None else 1
        up = want if ready else 0
        status = {"replicas": up, "updatedReplicas": up, "readyReplicas": up, "availableReplicas": up}
        await _status(api, Deployment, d, status)


async def applied(api: KubeClient, manifests: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, int | None]]:
    """(resource version, generation) by kind/name of each of `manifests` as the cluster holds
    it: what applying them again must leave unchanged."""
    out = {}
    for o in manifests:
        kind: Any = resource_registry.load(o["apiVersion"], o["kind"])
        got: Any = await api.get(kind, o["metadata"]["name"], o["metadata"].get("namespace"))
        assert got is not None and got.metadata is not None, o["metadata"]
        out[f"{o['kind']}/{o['metadata']['name']}"] = (str(got.metadata.resourceVersion), got.metadata.generation)
    return out


async def _status(api: KubeClient, kind: Any, obj: Any, status: dict[str, int]) -> None:
    status["observedGeneration"] = obj.metadata.generation
    have = obj.status.to_dict() if obj.status is not None else {}
    if all(have.get(k) == v for k, v in status.items()):
        return
    await api.client.patch(
        kind.Status, obj.metadata.name, {"status": status}, namespace=obj.metadata.namespace,
        patch_type=PatchType.MERGE,
    )  # fmt: skip
