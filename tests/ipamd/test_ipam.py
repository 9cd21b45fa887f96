"""The IPAM core over each IP storage (in-memory and real etcd): allocation, idempotency, fixed
addresses, stale releases, cooldown, exhaustion, GC, workload release, pool deletion."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support.workloads import KnownPods
from tke.internal.ipamd.allocator import Block
from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.noderule import NodeCaller
from tke.internal.ipamd.storage import IPStorage, Lost, NamespaceBindings, Stored
from tke.internal.rpc.errors import ApiError
from tke.ipam.v1 import ipam_pb2
from tke.plugins.ip_providers.static import StaticProvider

from .conftest import Clock, allocate_request, pool

IMMUTABLE = ipam_pb2.RELEASE_POLICY_IMMUTABLE
NEVER = ipam_pb2.RELEASE_POLICY_NEVER


def make_ipam(storage: IPStorage, clock: Clock, cooldown: float = 30.0, pods: KnownPods | None = None) -> IPAM:
    return IPAM(storage, {"static": StaticProvider()}, cooldown=cooldown, clock=clock, resolver=pods)


async def bind(ipam: IPAM, workload: str, policy: int, *, kind: str = "StatefulSet", pool_name: str = "") -> None:
    await ipam.put_binding(
        ipam_pb2.Binding(
            workload=ipam_pb2.WorkloadRef(namespace="default", kind=kind, name=workload),
            pool=pool_name,
            release_policy=policy,  # type: ignore[arg-type]
            network="fixed",
        )
    )


async def test_allocate_is_idempotent_and_release_too(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock)
    await ipam.create_pool(pool())
    first = await ipam.allocate(allocate_request("web-1"))
    assert first.allocation.address == "10.0.1.2/24"
    assert first.allocation.gateway == "10.0.1.1"
    assert [r.dst for r in first.allocation.routes] == ["0.0.0.0/0"]
    assert not first.reused
    again = await ipam.allocate(allocate_request("web-1"))
    assert again.reused and again.allocation.ip == first.allocation.ip
    other = await ipam.allocate(allocate_request("web-2"))
    assert other.allocation.ip != first.allocation.ip
    released = await ipam.release("c-web-1", "eth0")
    assert released.found and not released.retained
    assert not (await ipam.release("c-web-1", "eth0")).found
    status = (await ipam.get_pool("net-a")).status
    assert (status.capacity, status.allocated, status.cooling) == (253, 1, 1)


async def test_interface_of_another_pod_is_refused(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock)
    await ipam.create_pool(pool())
    await ipam.allocate(allocate_request("a", "shared"))
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("b", "shared"))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_cooldown_before_reuse(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock, cooldown=60)
    await ipam.create_pool(pool(cidr="10.0.1.0/29"))  # 6 hosts minus the gateway: 5
    got = [(await ipam.allocate(allocate_request(f"p{i}"))).allocation.ip for i in range(5)]
    assert len(set(got)) == 5
    await ipam.release("c-p0", "eth0")
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("late"))
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("late", ip=got[0]))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    clock.advance(61)
    assert (await ipam.allocate(allocate_request("late"))).allocation.ip == got[0]


async def test_specific_address_owned_by_someone_else(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock)
    await ipam.create_pool(pool())
    a = await ipam.allocate(allocate_request("a", ip="10.0.1.50"))
    assert a.allocation.ip == "10.0.1.50"
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("b", ip="10.0.1.50"))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "default/a" in err.value.message
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("b", ip="10.0.1.1"))  # the gateway
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_fixed_address_follows_its_owner_across_restart_and_move(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock, pods=KnownPods().stateful_set("db", 2))
    await ipam.create_pool(pool())
    await bind(ipam, "db", IMMUTABLE)
    first = await ipam.allocate(allocate_request("db-0", "c1", uid="u1", node="node-1"))
    assert first.allocation.owner.workload_name == "db"  # resolved: the pod's controller
    assert first.allocation.release_policy == IMMUTABLE
    released = await ipam.release("c1", "eth0", "u1")
    assert released.retained
    # A restart: new container, same pod.
    second = await ipam.allocate(allocate_request("db-0", "c2", uid="u1", node="node-1"))
    assert second.reused and second.allocation.ip == first.allocation.ip
    # A move to another node without the old container's DEL: a new pod uid takes over.
    third = await ipam.allocate(allocate_request("db-0", "c3", uid="u2", node="node-2"))
    assert third.reused and third.allocation.ip == first.allocation.ip
    assert third.allocation.node == "node-2"
    # The stale DEL of c2 (old uid) must not free the moved pod's address.
    assert not (await ipam.release("c2", "eth0", "u1")).found
    held = await ipam.get_by_attachment("c3", "eth0")
    assert held.ip == first.allocation.ip
    # Another pod never gets it.
    other = await ipam.allocate(allocate_request("db-1", "c4"))
    assert other.allocation.ip != first.allocation.ip


def node_caller(node: str) -> NodeCaller:
    return NodeCaller(node, f"node identity 'system:node:{node}'", identity=True)


async def node_restricted(call: Awaitable[object], says: str) -> str:
    with pytest.raises(ApiError) as err:
        await call
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, err.value.message
    info = next(d for d in err.value.details if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.reason == "NODE_RESTRICTED"
    assert says in err.value.message, err.value.message
    return err.value.message


async def where(ipam: IPAM, pod: str) -> tuple[str, str, str]:
    a = await ipam.get_by_owner(ipam_pb2.Owner(namespace="default", pod_name=pod, workload_kind="StatefulSet",
                                               workload_name="db"))  # fmt: skip
    return a.ip, a.container_id, a.node


async def test_a_node_takes_fixed_addresses_only_for_pods_bound_to_it(ip_storage: IPStorage, clock: Clock) -> None:
    pods = KnownPods().stateful_set("db", 2).bind("db-0", "node-1", "u1").bind("db-1", "node-1", "v1")
    ipam = make_ipam(ip_storage, clock, pods=pods)
    one, two = node_caller("node-1"), node_caller("node-2")
    await ipam.create_pool(pool())
    await bind(ipam, "db", IMMUTABLE)
    first = (await ipam.allocate(allocate_request("db-0", "c1", uid="u1", node="node-1"), node=one)).allocation
    attached = (first.ip, "c1", "node-1")

    # Node 2 naming node 1's running pod (with its uid, or none) would take the address from a
    # container that still runs: refused while the pod is bound to node 1; nothing changes.
    for uid in ("u1", ""):
        said = await node_restricted(
            ipam.allocate(allocate_request("db-0", "c2", uid=uid, node="node-2"), node=two),
            "the Kubernetes API says pod default/db-0 is bound to node 'node-1'",
        )
        assert f"fixed address {first.ip} (container c1 on node 'node-1')" in said
        assert await where(ipam, "db-0") == attached
    # A new fixed address for a pod bound elsewhere (it would follow the pod there), or for a pod
    # the API does not know, is refused too, and nothing is taken.
    db1 = allocate_request("db-1", "c3", node="node-2")
    await node_restricted(ipam.allocate(db1, node=two), "bound to node 'node-1'")
    db2 = allocate_request("db-2", "c3", node="node-2", kind="StatefulSet", workload="db")
    await node_restricted(ipam.allocate(db2, node=two), "has no pod default/db-2")
    assert (await ipam.get_pool("net-a")).status.allocated == 1
    # An API that cannot answer decides nothing (the runtime names the workload: only the pod's
    # placement is asked).
    pods.unreachable = True
    named = allocate_request("db-0", "c2", uid="u1", node="node-2", kind="StatefulSet", workload="db")
    with pytest.raises(ApiError) as err:
        await ipam.allocate(named, node=two)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and "where pod default/db-0 is bound" in err.value.message
    pods.unreachable = False
    assert await where(ipam, "db-0") == attached

    # The StatefulSet's pod is deleted and created again on node 2 (a new uid): node 2 takes it
    # over, as after a dead node; a stale request carrying the old uid is refused.
    pods.delete("db-0")
    pods.stateful_set("db", 1).bind("db-0", "node-2", "u2")
    await node_restricted(
        ipam.allocate(allocate_request("db-0", "c2", uid="u1", node="node-2"), node=two), "uid u1 is not"
    )
    moved = await ipam.allocate(allocate_request("db-0", "c2", uid="u2", node="node-2"), node=two)
    assert moved.reused and (moved.allocation.ip, moved.allocation.node) == (first.ip, "node-2")
    # Node 1 (its kubelet still running the old pod) cannot take it back, retained or not.
    await node_restricted(ipam.allocate(allocate_request("db-0", "c4", uid="u1", node="node-1"), node=one), "uid u1")
    await ipam.release("c2", "eth0", "u2")
    await node_restricted(
        ipam.allocate(allocate_request("db-0", "c4", uid="u2", node="node-1"), node=one), "(retained, last on node"
    )
    assert await where(ipam, "db-0") == (first.ip, "", "node-2")
    # A restart on its node, and an operator (no node), as before.
    assert (await ipam.allocate(allocate_request("db-0", "c5", uid="u2", node="node-2"), node=two)).reused
    operator = await ipam.allocate(allocate_request("db-0", "c6", uid="u2", node="node-1"))
    assert (operator.allocation.ip, operator.allocation.node) == (first.ip, "node-1")


async def test_a_node_gets_any_address_only_for_its_bound_pods_and_up_to_its_limit(
    ip_storage: IPStorage, clock: Clock
) -> None:
    """Every new address of a node's caller is for a pod bound to it (one API read per call; a
    repeated Allocate reads none), and the node holds at most max_allocations_per_node."""
    pods = KnownPods().bind("web-1", "node-1").bind("web-2", "node-1").bind("web-3", "node-1")
    ipam = IPAM(ip_storage, {"static": StaticProvider()}, clock=clock, resolver=pods, max_allocations_per_node=2)
    one, two = node_caller("node-1"), node_caller("node-2")
    await ipam.create_pool(pool())
    first = (await ipam.allocate(allocate_request("web-1", "c1"), node=one)).allocation
    assert pods.placed == [("default", "web-1")]
    assert (await ipam.allocate(allocate_request("web-1", "c1"), node=one)).reused
    assert pods.placed == [("default", "web-1")]  # the repeat asked nothing

    # Pods that exist nowhere or run elsewhere: refused after one read each (the namespace's
    # bindings came from memory: a retry on fresher ones would change nothing), nothing taken.
    pods.placed.clear()
    await node_restricted(ipam.allocate(allocate_request("ghost", "c2"), node=one), "has no pod default/ghost")
    await node_restricted(
        ipam.allocate(allocate_request("web-2", "c2", node="node-2"), node=two), "is bound to node 'node-1'"
    )
    assert pods.placed == [("default", "ghost"), ("default", "web-2")]
    # Its own pod as another workload (whose binding would pick the pool): refused, one read too.
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("web-3", "c3", kind="Deployment", workload="api"), node=one)
    info = next(d for d in err.value.details if isinstance(d, error_details_pb2.ErrorInfo))
    assert (info.reason, info.metadata["pod_workload"]) == ("NOT_THE_PODS_WORKLOAD", "Pod default/web-3")
    assert "a node takes a workload's addresses only for that workload's own pods" in err.value.message
    assert pods.placed[2:] == [("default", "web-3")]
    assert (await ipam.get_pool("net-a")).status.allocated == 1

    # The limit: the second address is the last; a repeat at the limit is no new one.
    await ipam.allocate(allocate_request("web-2", "c2"), node=one)
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("web-3", "c3"), node=one)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.message
    info = next(d for d in err.value.details if isinstance(d, error_details_pb2.ErrorInfo))
    assert (info.reason, info.metadata["held"], info.metadata["limit"]) == ("NODE_ALLOCATION_LIMIT", "2", "2")
    assert (await ipam.allocate(allocate_request("web-1", "c1"), node=one)).allocation.ip == first.ip
    assert (await ipam.get_pool("net-a")).status.allocated == 2
    await ipam.release("c1", "eth0")
    await ipam.allocate(allocate_request("web-3", "c3"), node=one)
    # An operator (no node) is neither checked nor limited.
    await ipam.allocate(allocate_request("ghost", "c4"))
    assert len(await ip_storage.by_node("node-1")) == await ip_storage.count_by_node("node-1") == 3


async def test_a_nodes_concurrent_allocates_stop_at_its_limit(ip_storage: IPStorage, clock: Clock) -> None:
    """One replica lets a node's new allocations through one at a time from the count to the
    write: calls sent at once do not overshoot max_allocations_per_node."""
    pods = KnownPods()
    for i in range(8):
        pods.bind(f"web-{i}", "node-1")
    ipam = IPAM(ip_storage, {"static": StaticProvider()}, clock=clock, resolver=pods, max_allocations_per_node=3)
    await ipam.create_pool(pool())
    one = node_caller("node-1")
    outcomes = await asyncio.gather(
        *(ipam.allocate(allocate_request(f"web-{i}", f"c{i}"), node=one) for i in range(8)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(refused) == 5 and all(o.code == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused), outcomes
    assert await ip_storage.count_by_node("node-1") == 3
    assert ipam._node_locks._locks == {}  # dropped with the last call


async def test_a_nodes_retained_addresses_count_against_it_until_taken_or_released(ip_storage: IPStorage,
                                                                                   clock: Clock) -> None:  # fmt: skip
    """A fixed address a node's container released stays RETAINED for its pod and counts against
    that node, so without an API to vouch for its pods a node cannot pile up retained addresses of
    made-up ones. Its own pod takes one back at the limit; a pod on another node takes it with its
    count; ReleaseWorkload and the watcher's reclaim free it and its count; GC keeps it counted."""
    ipam = IPAM(ip_storage, {"static": StaticProvider()}, clock=clock, max_allocations_per_node=3)  # no API
    await ipam.create_pool(pool())
    await bind(ipam, "db", IMMUTABLE)
    await bind(ipam, "web", IMMUTABLE, kind="Deployment")
    one, two = node_caller("node-1"), node_caller("node-2")

    def db(i: int, container: str, node: str = "node-1") -> ipam_pb2.AllocateRequest:
        return allocate_request(f"db-{i}", container, node=node, kind="StatefulSet", workload="db")

    async def counts() -> tuple[int, int]:
        return await ip_storage.count_by_node("node-1"), await ip_storage.count_by_node("node-2")

    ips = [(await ipam.allocate(db(i, f"c{i}"), node=one)).allocation.ip for i in range(3)]
    for i in range(3):
        assert (await ipam.release(f"c{i}", "eth0")).retained
    assert (await counts(), await ip_storage.by_node("node-1")) == ((3, 0), [])
    ghost = allocate_request("ghost", "cg")
    ghost.release_policy = IMMUTABLE
    with pytest.raises(ApiError) as err:
        await ipam.allocate(ghost, node=one)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.message
    info = next(d for d in err.value.details if isinstance(d, error_details_pb2.ErrorInfo))
    assert (info.reason, info.metadata["held"]) == ("NODE_ALLOCATION_LIMIT", "3")
    assert "counting the fixed addresses retained since their last container there" in err.value.message

    # db-0 comes back on node-1, at its limit: its own address, no new one.
    back = await ipam.allocate(db(0, "c0b"), node=one)
    assert (back.reused, back.allocation.ip, await counts()) == (True, ips[0], (3, 0))
    # db-1 is rescheduled to node-2: its count goes along.
    moved = await ipam.allocate(db(1, "c1b", "node-2"), node=two)
    assert (moved.allocation.ip, moved.allocation.node, await counts()) == (ips[1], "node-2", (2, 1))
    # A Deployment's retained address, left on node-2, taken over by its next pod on node-1.
    await ipam.allocate(allocate_request("web-a", "cwa", node="node-2", kind="Deployment", workload="web"), node=two)
    await ipam.release("cwa", "eth0")
    assert await counts() == (2, 2)
    web = allocate_request("web-b", "cwb", kind="Deployment", workload="web")
    assert (await ipam.allocate(web, node=one)).reused and await counts() == (3, 1)
    with pytest.raises(ApiError):
        await ipam.allocate(allocate_request("p-1", "cp1"), node=one)

    # The StatefulSet scaled down to 2 frees db-2's retained address, and node-1's room.
    w = ipam_pb2.WorkloadRef(namespace="default", kind="StatefulSet", name="db")
    released, _ = await ipam.release_workload(w, deleted=False, replicas=2, keep=set(), force=False)
    assert [a.ip for a in released] == [ips[2]] and await counts() == (2, 1)
    # web-b is gone and so is its Deployment: the watcher's reclaim frees its retained address.
    await ipam.release("cwb", "eth0")
    assert await counts() == (2, 1)
    stored = await ip_storage.by_workload("default", "Deployment", "web")
    assert len(stored) == 1 and await ipam.reclaim(stored[0])
    assert await counts() == (1, 1)
    # Garbage collection of db-0's container leaves its fixed address retained, still node-1's.
    assert len(await ipam.garbage_collect("node-1", set(), dry_run=False, min_age=0)) == 1
    assert (await counts(), await ip_storage.by_node("node-1")) == ((1, 1), [])


async def test_a_nodes_concurrent_takeovers_of_retained_addresses_stop_at_its_limit(ip_storage: IPStorage,
                                                                                    clock: Clock) -> None:  # fmt: skip
    """Taking over another node's retained address adds one to the node's count: it is checked
    under the node's lock like a new address, so takeovers sent at once stop at the limit, and
    the addresses taken leave the other node's count."""
    ipam = IPAM(ip_storage, {"static": StaticProvider()}, clock=clock, max_allocations_per_node=3)  # no API
    await ipam.create_pool(pool())
    await bind(ipam, "db", IMMUTABLE)
    one, two = node_caller("node-1"), node_caller("node-2")

    def db(i: int, container: str, node: str) -> ipam_pb2.AllocateRequest:
        return allocate_request(f"db-{i}", container, node=node, kind="StatefulSet", workload="db")

    for i in range(3):
        await ipam.allocate(db(i, f"c2-{i}", "node-2"), node=two)
        await ipam.release(f"c2-{i}", "eth0")
    await ipam.allocate(allocate_request("web-1", "c1-w"), node=one)
    outcomes = await asyncio.gather(
        *(ipam.allocate(db(i, f"c1-{i}", "node-1"), node=one) for i in range(3)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(refused) == 1 and refused[0].code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcomes
    assert (await ip_storage.count_by_node("node-1"), await ip_storage.count_by_node("node-2")) == (3, 1)


async def test_a_node_takes_a_workloads_fixed_address_only_for_its_own_pods(ip_storage: IPStorage,
                                                                            clock: Clock) -> None:  # fmt: skip
    pods = KnownPods()
    for pod, workload in (("api-1", "api"), ("web-1", "web"), ("api-2", "api")):
        pods.add(pod, "Deployment", workload).bind(pod, "node-1")
    ipam = make_ipam(ip_storage, clock, pods=pods)
    one = node_caller("node-1")
    await ipam.create_pool(pool())
    for name in ("api", "web"):
        await bind(ipam, name, IMMUTABLE, kind="Deployment")
    kept = (await ipam.allocate(allocate_request("api-1", "c1", node="node-1"), node=one)).allocation
    assert (await ipam.release("c1", "eth0")).retained
    pods.delete("api-1")

    # Web's pod names Deployment api (its retained address would be taken over): refused, before
    # anything changes; the same for a kind the request leaves out.
    for kind in ("Deployment", ""):
        with pytest.raises(ApiError) as err:
            await ipam.allocate(allocate_request("web-1", "c2", kind=kind, workload="api"), node=one)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, err.value.message
        info = next(d for d in err.value.details if isinstance(d, error_details_pb2.ErrorInfo))
        assert info.reason == "NOT_THE_PODS_WORKLOAD"
        assert info.metadata["pod_workload"] == "Deployment default/web"
        assert "the Kubernetes API says pod default/web-1 belongs to Deployment default/web" in err.value.message
    held = await ipam.get_by_address("net-a", kept.ip)
    assert (held.state, held.container_id, held.owner.pod_name) == (ipam_pb2.ALLOCATION_STATE_RETAINED, "", "api-1")

    # Its own workload gets its own address; api's next pod takes api's over; an operator (no
    # node) is not checked.
    assert (await ipam.allocate(allocate_request("web-1", "c2"), node=one)).allocation.ip != kept.ip
    taken = await ipam.allocate(allocate_request("api-2", "c3", kind="Deployment", workload="api"), node=one)
    assert taken.reused and taken.allocation.ip == kept.ip
    operator = await ipam.allocate(allocate_request("web-1", "c4", kind="Deployment", workload="api"))
    assert operator.allocation.owner.workload_name == "api"


async def test_without_kubernetes_a_node_takes_no_address_attached_on_another(ip_storage: IPStorage,
                                                                              clock: Clock) -> None:  # fmt: skip
    ipam = make_ipam(ip_storage, clock)  # no resolver: nothing is known about pods
    one, two = node_caller("node-1"), node_caller("node-2")
    await ipam.create_pool(pool())
    await bind(ipam, "db", IMMUTABLE)

    def db0(container: str, node: str) -> ipam_pb2.AllocateRequest:
        return allocate_request("db-0", container, uid="u1", node=node, kind="StatefulSet", workload="db")

    first = (await ipam.allocate(db0("c1", "node-1"), node=one)).allocation
    said = await node_restricted(ipam.allocate(db0("c2", "node-2"), node=two), "configure [kubernetes]")
    assert "or have an operator (not a node) allocate it" in said
    assert await where(ipam, "db-0") == (first.ip, "c1", "node-1")
    # A restart on its node, and a reschedule after a clean DEL (no container holds it), as before.
    assert (await ipam.allocate(db0("c3", "node-1"), node=one)).reused
    await ipam.release("c3", "eth0", "u1")
    assert (await ipam.allocate(db0("c4", "node-2"), node=two)).allocation.ip == first.ip
    await node_restricted(ipam.allocate(db0("c5", "node-1"), node=one), "configure [kubernetes]")
    # An operator moves it.
    assert (await ipam.allocate(db0("c5", "node-1"))).allocation.node == "node-1"


async def test_stale_release_with_other_uid_is_ignored(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock)
    await ipam.create_pool(pool())
    await ipam.allocate(allocate_request("p", "c1", uid="new"))
    assert not (await ipam.release("c1", "eth0", "old")).found
    assert (await ipam.get_by_attachment("c1", "eth0")).owner.pod_uid == "new"


async def test_release_workload_scale_down_and_delete(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock, pods=KnownPods().stateful_set("db", 3))
    await ipam.create_pool(pool())
    await bind(ipam, "db", IMMUTABLE)
    ips = {}
    for i in range(3):
        ips[i] = (await ipam.allocate(allocate_request(f"db-{i}", f"c{i}"))).allocation.ip
        await ipam.release(f"c{i}", "eth0")
    await ipam.allocate(allocate_request("db-0", "c0b"))  # db-0 runs again
    w = ipam_pb2.WorkloadRef(namespace="default", kind="StatefulSet", name="db")
    released, deferred = await ipam.release_workload(w, deleted=False, replicas=2, keep=set(), force=False)
    assert [a.owner.pod_name for a in released] == ["db-2"] and not deferred
    released, deferred = await ipam.release_workload(w, deleted=True, replicas=None, keep=set(), force=False)
    assert [a.owner.pod_name for a in released] == ["db-1"]
    assert [a.owner.pod_name for a in deferred] == ["db-0"]
    # The deferred one is freed by its container's release.
    assert not (await ipam.release("c0b", "eth0")).retained
    assert (await ipam.get_pool("net-a")).status.allocated == 0


async def test_never_policy_needs_force(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock)
    await ipam.create_pool(pool())
    await bind(ipam, "keep", NEVER, kind="Deployment")
    # The runtime names the workload (TKE_WORKLOAD_KIND/NAME in CNI_ARGS).
    await ipam.allocate(allocate_request("keep-7d9f8b6c4-abcde", "c1", kind="Deployment", workload="keep"))
    await ipam.release("c1", "eth0")
    w = ipam_pb2.WorkloadRef(namespace="default", kind="Deployment", name="keep")
    assert await ipam.release_workload(w, deleted=True, replicas=None, keep=set(), force=False) == ([], [])
    released, _ = await ipam.release_workload(w, deleted=True, replicas=None, keep=set(), force=True)
    assert len(released) == 1


async def test_garbage_collect_by_node(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock, pods=KnownPods().stateful_set("db", 1))
    await ipam.create_pool(pool())
    await bind(ipam, "db", IMMUTABLE)
    await ipam.allocate(allocate_request("live", "c-live"))
    await ipam.allocate(allocate_request("gone", "c-gone"))
    await ipam.allocate(allocate_request("db-0", "c-db"))
    await ipam.allocate(allocate_request("elsewhere", "c-else", node="node-2"))
    clock.advance(120)
    valid = {("c-live", "eth0")}
    dry = await ipam.garbage_collect("node-1", valid, dry_run=True, min_age=60)
    assert sorted(a.container_id for a in dry) == ["c-db", "c-gone"]
    collected = await ipam.garbage_collect("node-1", valid, dry_run=False, min_age=60)
    assert sorted(a.container_id for a in collected) == ["c-db", "c-gone"]
    # The fixed address is retained for its owner, the other one freed.
    assert (
        await ipam.get_by_owner(
            ipam_pb2.Owner(namespace="default", pod_name="db-0", workload_kind="StatefulSet", workload_name="db")
        )
    ).state == 2
    assert (await ipam.get_by_attachment("c-else", "eth0")).node == "node-2"
    # A young allocation is left alone.
    await ipam.allocate(allocate_request("young", "c-young"))
    assert await ipam.garbage_collect("node-1", valid, dry_run=False, min_age=60) == []


async def test_pool_with_allocations_cannot_be_deleted(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock)
    await ipam.create_pool(pool())
    await ipam.allocate(allocate_request("p"))
    with pytest.raises(ApiError) as err:
        await ipam.delete_pool("net-a")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    # Still usable after the refused delete.
    await ipam.allocate(allocate_request("q"))
    await ipam.release("c-p", "eth0")
    await ipam.release("c-q", "eth0")
    await ipam.delete_pool("net-a")
    with pytest.raises(ApiError) as err:
        await ipam.get_pool("net-a")
    assert err.value.code == grpc.StatusCode.NOT_FOUND


async def test_pools_serve_their_nodes(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock)
    await ipam.create_pool(pool("rack-a", "10.1.0.0/24", node_subnets=["192.168.1.0/24"]))
    await ipam.create_pool(pool("rack-b", "10.2.0.0/24", node_names=["node-b"]))
    req = allocate_request("p1")
    req.node_ip = "192.168.1.7"
    assert (await ipam.allocate(req)).allocation.pool == "rack-a"
    assert (await ipam.allocate(allocate_request("p2", node="node-b"))).allocation.pool == "rack-b"
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("p3", node="node-z"))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_list_allocations_pages(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock)
    await ipam.create_pool(pool())
    for i in range(7):
        await ipam.allocate(allocate_request(f"p{i}", node="node-1" if i % 2 else "node-2"))
    seen: list[str] = []
    token = ""
    while True:
        page, token = await ipam.list_allocations(ipam_pb2.ListAllocationsRequest(page_token=token), 3)
        seen += [a.ip for a in page]
        if not token:
            break
    assert len(seen) == 7 == len(set(seen))
    node1, _ = await ipam.list_allocations(ipam_pb2.ListAllocationsRequest(node="node-1"), 100)
    assert len(node1) == 3


async def test_concurrent_allocations_never_share_an_address(ip_storage: IPStorage, clock: Clock) -> None:
    # Two IPAM instances (two replicas' worth of caches) over one storage.
    a, b = make_ipam(ip_storage, clock), make_ipam(ip_storage, clock)
    await a.create_pool(pool(cidr="10.0.0.0/25"))  # 125 addresses: two blocks
    requests = [(a if i % 2 else b).allocate(allocate_request(f"p{i}")) for i in range(120)]
    results = await asyncio.gather(*requests)
    ips = [r.allocation.ip for r in results]
    assert len(set(ips)) == 120


async def test_one_replica_never_races_itself(ip_storage: IPStorage, clock: Clock) -> None:
    """Concurrent first calls share one pool state (one cache, one writer per block), so a
    single replica's own requests never lose a compare-and-swap to each other."""
    lost: list[object] = []
    reserve = ip_storage.reserve

    async def counting(
        pool_version: int, block: Block, allocation: ipam_pb2.Allocation, *, bindings: NamespaceBindings | None = None
    ) -> Stored | Lost:
        outcome = await reserve(pool_version, block, allocation, bindings=bindings)
        if isinstance(outcome, Lost):
            lost.append(outcome)
        return outcome

    ip_storage.reserve = counting  # type: ignore[method-assign]
    ipam = make_ipam(ip_storage, clock)
    await make_ipam(ip_storage, clock).create_pool(pool(cidr="10.0.0.0/20"))
    results = await asyncio.gather(*(ipam.allocate(allocate_request(f"p{i}")) for i in range(64)))
    assert len({r.allocation.ip for r in results}) == 64
    assert lost == []


async def test_a_binding_changed_through_another_replica_applies_at_once(ip_storage: IPStorage, clock: Clock) -> None:
    """A replica keeps each namespace's bindings in memory; the allocation's write compares
    their version, so one put or deleted elsewhere is followed by the very next Allocate."""
    a, b = make_ipam(ip_storage, clock), make_ipam(ip_storage, clock)
    await a.create_pool(pool("p1", "10.1.0.0/24"))
    await a.create_pool(pool("p2", "10.2.0.0/24"))
    first = await a.allocate(allocate_request("web-0", kind="StatefulSet", workload="web"))
    assert first.allocation.pool == "p1"  # no binding yet; a now holds the namespace's bindings
    await bind(b, "web", ipam_pb2.RELEASE_POLICY_IMMUTABLE, pool_name="p2")
    bound = (await a.allocate(allocate_request("web-1", kind="StatefulSet", workload="web"))).allocation
    assert (bound.pool, bound.release_policy, bound.network) == ("p2", ipam_pb2.RELEASE_POLICY_IMMUTABLE, "fixed")
    await b.delete_binding(ipam_pb2.WorkloadRef(namespace="default", kind="StatefulSet", name="web"))
    unbound = (await a.allocate(allocate_request("web-2", kind="StatefulSet", workload="web"))).allocation
    assert (unbound.pool, unbound.release_policy) == ("p1", ipam_pb2.RELEASE_POLICY_POD_DELETE)


async def test_a_release_from_a_stale_hint_frees_what_the_storage_holds(ip_storage: IPStorage, clock: Clock) -> None:
    """A replica remembers the addresses it handed out, so that their Release needs no read;
    when another replica released and re-allocated the interface meanwhile, the release's
    compare-and-swap fails on the stale hint and the storage's allocation is the one freed."""
    a, b = make_ipam(ip_storage, clock, cooldown=0), make_ipam(ip_storage, clock, cooldown=0)
    await a.create_pool(pool(cidr="10.0.0.0/24"))
    await a.allocate(allocate_request("web-0", "c1", uid="u1"))
    assert (await b.release("c1", "eth0")).found
    again = (await b.allocate(allocate_request("web-0", "c1", uid="u2"))).allocation
    # a's hint says uid u1: a release for u2 is decided on the storage, which says u2.
    released = await a.release("c1", "eth0", pod_uid="u2")
    assert released.found and released.allocation is not None and released.allocation.ip == again.ip
    assert await ip_storage.by_attachment("c1", "eth0") is None
    assert await ip_storage.by_address("net-a", again.ip) is None
    assert sum(blk.count() for blk in await ip_storage.blocks("net-a")) == 0
    # Nothing is left to release, from either replica.
    assert not (await a.release("c1", "eth0")).found and not (await b.release("c1", "eth0")).found


async def test_a_pool_deleted_by_another_replica_is_skipped(ip_storage: IPStorage, clock: Clock) -> None:
    a, b = make_ipam(ip_storage, clock), make_ipam(ip_storage, clock)
    await a.create_pool(pool("p1", "10.1.0.0/24"))
    await a.create_pool(pool("p2", "10.2.0.0/24"))
    assert (await a.allocate(allocate_request("x"))).allocation.pool == "p1"
    await a.release("c-x", "eth0")
    await b.delete_pool("p1")
    # a's list of pools and its state of p1 are stale now; the allocation moves on to p2.
    assert (await a.allocate(allocate_request("y"))).allocation.pool == "p2"


async def test_update_pool_serves_new_nodes_on_every_replica(ip_storage: IPStorage, clock: Clock) -> None:
    a, b = make_ipam(ip_storage, clock), make_ipam(ip_storage, clock)
    await a.create_pool(pool("rack", "10.3.0.0/24", node_names=["node-1"]))
    await a.allocate(allocate_request("p1", node="node-1"))  # a caches the pool and the list
    await a.allocate(allocate_request("p2", node="node-1", pool_name="rack"))
    updated = ipam_pb2.Pool(name="rack", node_names=["node-1", "node-2"], dns=ipam_pb2.DNS(nameservers=["10.3.0.53"]))
    got = await b.update_pool(updated, ["node_names", "dns"])
    assert list(got.node_names) == ["node-1", "node-2"] and got.cidr == "10.3.0.0/24"
    assert got.status.allocated == 2
    named = await a.allocate(allocate_request("p3", node="node-2", pool_name="rack"))
    assert list(named.allocation.dns.nameservers) == ["10.3.0.53"]
    assert (await a.allocate(allocate_request("p4", node="node-2"))).allocation.pool == "rack"
    with pytest.raises(ApiError) as err:
        await b.update_pool(ipam_pb2.Pool(name="rack", cidr="10.4.0.0/24"), ["cidr"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ApiError) as err:
        await b.update_pool(ipam_pb2.Pool(name="rack", node_subnets=["not-a-cidr"]), ["node_subnets"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ApiError) as err:
        await b.update_pool(ipam_pb2.Pool(name="nope"), [])
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def web_pods(*suffixes: str) -> KnownPods:
    """Pods of Deployment web (through its ReplicaSet web-5d8f7c6b9)."""
    pods = KnownPods()
    for suffix in suffixes:
        pods.add(f"web-5d8f7c6b9-{suffix}", "Deployment", "web")
    return pods


async def test_deployment_pods_share_the_workloads_fixed_addresses(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock, pods=web_pods("abcde", "fghij", "klmno", "pqrst"))
    await ipam.create_pool(pool())
    await bind(ipam, "web", IMMUTABLE, kind="Deployment")
    first = (await ipam.allocate(allocate_request("web-5d8f7c6b9-abcde", "c1"))).allocation
    second = (await ipam.allocate(allocate_request("web-5d8f7c6b9-fghij", "c2"))).allocation
    await ipam.release("c1", "eth0")  # the pod went away: its address stays with the workload
    # A replacement pod (a new name) takes the retained address over.
    third = await ipam.allocate(allocate_request("web-5d8f7c6b9-klmno", "c3"))
    assert third.reused and third.allocation.ip == first.ip
    assert third.allocation.owner.pod_name == "web-5d8f7c6b9-klmno"
    with pytest.raises(ApiError):
        await ipam.get_by_owner(
            ipam_pb2.Owner(namespace="default", pod_name="web-5d8f7c6b9-abcde", workload_kind="Deployment",
                           workload_name="web")
        )  # fmt: skip
    # With none retained, a new pod gets a new address.
    fourth = await ipam.allocate(allocate_request("web-5d8f7c6b9-pqrst", "c4"))
    assert not fourth.reused and fourth.allocation.ip not in {first.ip, second.ip}
    w = ipam_pb2.WorkloadRef(namespace="default", kind="Deployment", name="web")
    _, deferred = await ipam.release_workload(w, deleted=True, replicas=None, keep=set(), force=False)
    assert len(deferred) == 3


async def test_deployment_scale_down_keeps_as_many_addresses_as_replicas(ip_storage: IPStorage, clock: Clock) -> None:
    ipam = make_ipam(ip_storage, clock, pods=web_pods(*(f"pod{i}a" for i in range(4))))
    await ipam.create_pool(pool())
    await bind(ipam, "web", IMMUTABLE, kind="Deployment")
    for i in range(4):
        await ipam.allocate(allocate_request(f"web-5d8f7c6b9-pod{i}a", f"c{i}"))
    for i in (2, 3):
        await ipam.release(f"c{i}", "eth0")  # two pods gone: their addresses are retained
    w = ipam_pb2.WorkloadRef(namespace="default", kind="Deployment", name="web")
    # Scaled to 3: two in use, so one retained address stays and the other goes.
    released, deferred = await ipam.release_workload(w, deleted=False, replicas=3, keep=set(), force=False)
    assert len(released) == 1 and not deferred
    assert (await ipam.get_pool("net-a")).status.allocated == 3
    released, _ = await ipam.release_workload(w, deleted=False, replicas=2, keep=set(), force=False)
    assert len(released) == 1
    assert (await ipam.get_pool("net-a")).status.allocated == 2


async def test_workload_addresses_are_only_taken_over_where_their_pool_serves(
    ip_storage: IPStorage, clock: Clock
) -> None:
    ipam = make_ipam(ip_storage, clock, pods=web_pods("aaaaa", "bbbbb", "ccccc"))
    await ipam.create_pool(pool("rack-a", "10.1.0.0/24", node_names=["node-a"]))
    await ipam.create_pool(pool("rack-b", "10.2.0.0/24", node_names=["node-b"]))
    await bind(ipam, "web", IMMUTABLE, kind="Deployment")
    await ipam.allocate(allocate_request("web-5d8f7c6b9-aaaaa", "c1", node="node-a"))
    await ipam.release("c1", "eth0")
    # A new pod on a node of the other rack gets an address there, not rack-a's retained one.
    other = await ipam.allocate(allocate_request("web-5d8f7c6b9-bbbbb", "c2", node="node-b"))
    assert other.allocation.pool == "rack-b" and not other.reused
    again = await ipam.allocate(allocate_request("web-5d8f7c6b9-ccccc", "c3", node="node-a"))
    assert again.allocation.pool == "rack-a" and again.reused


async def test_a_pool_with_namespaces_hands_addresses_to_those_namespaces_only(
    ip_storage: IPStorage, clock: Clock
) -> None:
    ipam = make_ipam(ip_storage, clock)
    await ipam.create_pool(pool("a-shop", "10.0.2.0/24", namespaces=["shop", "shop-*"]))
    await ipam.create_pool(pool("open", "10.0.3.0/24"))

    def not_allowed(err: ApiError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
        info = err.details[0]
        assert isinstance(info, error_details_pb2.ErrorInfo)
        return err.code, info.reason, dict(info.metadata)

    # Named in the request, or through the workload's binding: refused, nothing taken.
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("web-0", namespace="blog", pool_name="a-shop"))
    assert not_allowed(err.value) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "POOL_NOT_ALLOWED",
        {"pool": "a-shop", "namespace": "blog"},
    )
    await ipam.put_binding(
        ipam_pb2.Binding(workload=ipam_pb2.WorkloadRef(namespace="blog", kind="Pod", name="db-0"), pool="a-shop")
    )
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("db-0", namespace="blog"))
    assert not_allowed(err.value)[1] == "POOL_NOT_ALLOWED"
    assert (await ipam.get_pool("a-shop")).status.allocated == 0
    # Chosen by node: the first pool by name that admits the namespace.
    assert (await ipam.allocate(allocate_request("web-1", namespace="blog"))).allocation.pool == "open"
    assert (await ipam.allocate(allocate_request("web-2", namespace="shop"))).allocation.pool == "a-shop"
    named = await ipam.allocate(allocate_request("web-3", namespace="shop-web", pool_name="a-shop"))
    assert named.allocation.pool == "a-shop"

    # Mutable: new allocations follow the new list; addresses already held stay.
    await ipam.update_pool(pool("a-shop", namespaces=["blog"]), ["namespaces"])
    assert (await ipam.allocate(allocate_request("db-0", namespace="blog"))).allocation.pool == "a-shop"
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("web-4", namespace="shop", pool_name="a-shop"))
    assert not_allowed(err.value)[1] == "POOL_NOT_ALLOWED"
    assert (await ipam.get_by_attachment("c-web-2", "eth0")).pool == "a-shop"
    with pytest.raises(ApiError) as err:
        await ipam.create_pool(pool("bad", "10.0.4.0/24", namespaces=["Shop", "x*y", "*"]))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in err.value.details[0].field_violations]  # type: ignore[attr-defined]
    assert fields == ["pool.namespaces[0]", "pool.namespaces[1]", "pool.namespaces[2]"]
