"""A fake of tke-ipamd's WorkloadResolver seam (tke.internal.ipamd.workloads): a table of the
pods a test says exist and the workloads that own them, and a switch that makes it unreachable,
as the Kubernetes API can be. The real resolver is tested against the Kubernetes API stand-in."""

from __future__ import annotations

from tke.internal.ipamd.workloads import ResolverUnavailable, Workload


class KnownPods:
    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], Workload] = {}
        self.unreachable = False
        self.asked: list[tuple[str, str]] = []

    def add(self, pod: str, kind: str, name: str, namespace: str = "default") -> KnownPods:
        self.pods[(namespace, pod)] = Workload(namespace, kind, name)
        return self

    def stateful_set(self, name: str, replicas: int, namespace: str = "default") -> KnownPods:
        for i in range(replicas):
            self.add(f"{name}-{i}", "StatefulSet", name, namespace)
        return self

    async def workload_of(self, namespace: str, pod_name: str) -> Workload | None:
        self.asked.append((namespace, pod_name))
        if self.unreachable:
            raise ResolverUnavailable("the Kubernetes API is unreachable (test)")
        return self.pods.get((namespace, pod_name))
