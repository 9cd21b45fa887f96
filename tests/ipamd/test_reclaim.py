"""The workload watcher's policy (pure): which of a workload's addresses go back, from what the
API says of the workload and its pods."""

from __future__ import annotations

from collections.abc import Callable

from tke.internal.ipamd.reclaim import UNKNOWN, Release, WorkloadState, to_release
from tke.internal.ipamd.storage import Stored
from tke.ipam.v1 import ipam_pb2

POD_DELETE = ipam_pb2.RELEASE_POLICY_POD_DELETE
IMMUTABLE = ipam_pb2.RELEASE_POLICY_IMMUTABLE
NEVER = ipam_pb2.RELEASE_POLICY_NEVER
ATTACHED, RETAINED = ipam_pb2.ALLOCATION_STATE_ATTACHED, ipam_pb2.ALLOCATION_STATE_RETAINED


def stored(pod: str, ip: str, kind: str = "StatefulSet", name: str = "db", *, policy: int = IMMUTABLE,
           state: int = RETAINED, uid: str = "") -> Stored:  # fmt: skip
    owner = ipam_pb2.Owner(namespace="ns", pod_name=pod, pod_uid=uid, workload_kind=kind, workload_name=name)
    a = ipam_pb2.Allocation(ip=ip, pool="p", owner=owner, release_policy=policy, state=state)  # type: ignore[arg-type]
    return Stored(a, 1)


def pods(**uids: str) -> Callable[[str], str | None]:
    return lambda name: uids.get(name.replace("-", "_"))


def names(out: list[Release]) -> list[str]:
    return [r.stored.allocation.owner.pod_name for r in out]


def test_a_stateful_set_keeps_the_ordinals_it_still_wants_and_any_live_pod() -> None:
    group = [stored(f"db-{i}", f"10.0.0.{i + 2}") for i in range(4)]
    live = pods(db_0="u0", db_3="u3")  # db-3 is still being stopped
    assert names(to_release(group, WorkloadState(exists=True, replicas=1), live)) == ["db-1", "db-2"]
    assert names(to_release(group, WorkloadState(exists=True, replicas=3), live)) == []
    assert names(to_release(group, WorkloadState(exists=False), live)) == ["db-1", "db-2"]


def test_a_deployment_keeps_as_many_addresses_as_replicas_live_pods_first() -> None:
    group = [
        stored("web-a", "10.0.0.9", "Deployment", "web", state=ATTACHED),
        stored("web-b", "10.0.0.3", "Deployment", "web"),
        stored("web-c", "10.0.0.2", "Deployment", "web"),
        stored("web-d", "10.0.0.4", "Deployment", "web"),
    ]
    live = pods(web_a="ua")
    got = to_release(group, WorkloadState(exists=True, replicas=2), live)
    assert names(got) == ["web-b", "web-d"]  # one live, then the lowest address kept
    assert "keeps 2 addresses" in got[0].reason
    assert names(to_release(group, WorkloadState(exists=True, replicas=5), live)) == []
    assert len(to_release(group, WorkloadState(exists=False), live)) == 3


def test_pod_delete_addresses_go_with_their_pod_or_its_incarnation() -> None:
    group = [
        stored("a", "10.0.0.2", "Pod", "a", policy=POD_DELETE, state=ATTACHED, uid="old"),
        stored("b", "10.0.0.3", "ReplicaSet", "r", policy=POD_DELETE, state=ATTACHED, uid="ub"),
        stored("c", "10.0.0.4", "ReplicaSet", "r", policy=POD_DELETE, state=ATTACHED),
    ]
    got = to_release(group, WorkloadState(exists=True, replicas=3), pods(a="new", b="ub"))
    assert names(got) == ["a", "c"]
    assert "replaced" in got[0].reason and "gone" in got[1].reason


def test_never_and_unknown_kinds_are_never_released() -> None:
    assert to_release([stored("db-5", "10.0.0.2", policy=NEVER)], WorkloadState(exists=False), pods()) == []
    job = [stored("job-x", "10.0.0.2", "Job", "job")]
    assert to_release(job, UNKNOWN, pods()) == []
    bare = [stored("lonely", "10.0.0.2", "Pod", "lonely")]
    assert names(to_release(bare, WorkloadState(exists=False), pods())) == ["lonely"]
    assert to_release(bare, WorkloadState(exists=True), pods(lonely="u")) == []
