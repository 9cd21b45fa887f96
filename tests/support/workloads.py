"""A fake of tke-ipamd's WorkloadResolver seam (tke.internal.ipamd.workloads): a table of the
pods a test says exist, the workloads that own them and the nodes they are bound to, and a
switch that makes it unreachable, as the Kubernetes API can be. The real resolver is tested
against the Kubernetes API stand-in."""

from __future__ import annotations

from dataclasses import replace

from tke.internal.ipamd.workloads import PodPlacement, ResolverUnavailable, Workload


class KnownPods:
    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], Workload] = {}
        self.placements: dict[tuple[str, str], PodPlacement] = {}
        self.unreachable = False
        self.asked: list[tuple[str, str]] = []
        self.placed: list[tuple[str, str]] = []

    def add(self, pod: str, kind: str, name: str, namespace: str = "default") -> KnownPods:
        self.pods[(namespace, pod)] = Workload(namespace, kind, name)
        return self

    def stateful_set(self, name: str, replicas: int, namespace: str = "default") -> KnownPods:
        for i in range(replicas):
            self.add(f"{name}-{i}", "StatefulSet", name, namespace)
        return self

    def bind(self, pod: str, node: str, uid: str = "", namespace: str = "default") -> KnownPods:
        """The pod (uid `uid`, default "uid-<pod>") is bound to `node` ("" not yet scheduled);
        its workload is the one `add` gave it, else its own."""
        self.placements[(namespace, pod)] = PodPlacement(uid or f"uid-{pod}", node, Workload(namespace, "Pod", pod))
        return self

    def delete(self, pod: str, namespace: str = "default") -> None:
        self.pods.pop((namespace, pod), None)
        self.placements.pop((namespace, pod), None)

    async def workload_of(self, namespace: str, pod_name: str) -> Workload | None:
        self.asked.append((namespace, pod_name))
        if self.unreachable:
            raise ResolverUnavailable("the Kubernetes API is unreachable (test)")
        return self.pods.get((namespace, pod_name))

    async def placement_of(self, namespace: str, pod_name: str) -> PodPlacement | None:
        self.placed.append((namespace, pod_name))
        if self.unreachable:
            raise ResolverUnavailable("the Kubernetes API is unreachable (test)")
        placed = self.placements.get((namespace, pod_name))
        workload = self.pods.get((namespace, pod_name))
        return replace(placed, workload=workload) if placed is not None and workload is not None else placed
