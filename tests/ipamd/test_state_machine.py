"""A hypothesis state machine over the IPAM core and the in-memory IP storage: random allocate,
release (also stale ones), concurrent bursts on two replicas, restarts, GC, workload scale-down
and time passing. After every step: no address is owned twice, the block bitmaps agree with the
allocations, fixed owners keep their address, and a freed address is not handed out again
before its cooldown."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.support.memory_ip_storage import MemoryIPStorage
from tke.internal.ipamd.allocator import BLOCK_SIZE
from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.pools import pool_layout
from tke.internal.ipamd.storage import allocation_owner_key, is_fixed
from tke.internal.rpc.errors import ApiError
from tke.ipam.v1 import ipam_pb2
from tke.plugins.ip_providers.static import StaticProvider

from .conftest import Clock, allocate_request

T = TypeVar("T")
COOLDOWN = 10.0
# db: a StatefulSet with fixed addresses per pod; api: a Deployment with fixed addresses shared
# by its (randomly named) pods; web: plain pods.
PODS = [f"db-{i}" for i in range(4)] + [f"api-7d9f8b6c4-{c * 5}" for c in "abc"] + [f"web-{i}" for i in range(4)]
NODES = ["node-1", "node-2"]


class IPAMMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.storage = MemoryIPStorage()
        self.replicas = [self._replica(), self._replica()]
        self.ids = itertools.count()
        self.containers: dict[str, tuple[str, str]] = {}  # every container ever: pod, uid
        self.live: dict[str, str] = {}  # container -> ip, as the model expects
        self.fixed: dict[str, tuple[str, str]] = {}  # fixed pod -> (its owner key, its address)
        self.freed_at: dict[str, float] = {}
        self.uids: dict[str, str] = {}  # pod -> current uid

    def _replica(self) -> IPAM:
        return IPAM(self.storage, {"static": StaticProvider()}, cooldown=COOLDOWN, clock=self.clock, attempts=1000)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.loop.close()

    @initialize()
    def setup(self) -> None:
        # A small pool (12 addresses) so that exhaustion, wrap-around and reuse happen often.
        self.run(self.replicas[0].create_pool(ipam_pb2.Pool(name="p", cidr="10.0.0.0/28", excluded=["10.0.0.9"])))
        for kind, name in (("StatefulSet", "db"), ("Deployment", "api")):
            self.run(
                self.replicas[0].put_binding(
                    ipam_pb2.Binding(
                        workload=ipam_pb2.WorkloadRef(namespace="default", kind=kind, name=name),
                        release_policy=ipam_pb2.RELEASE_POLICY_IMMUTABLE,
                    )
                )
            )

    def _pod_of(self, container: str) -> str:
        return self.containers[container][0]

    def _record(self, container: str, allocation: ipam_pb2.Allocation, reused: bool) -> None:
        ip, pod = allocation.ip, allocation.owner.pod_name
        if not reused:
            freed = self.freed_at.get(ip)
            assert freed is None or self.clock() - freed >= COOLDOWN, f"{ip} reused during its cooldown"
        if is_fixed(allocation):
            if pod in self.fixed:
                assert ip == self.fixed[pod][1], f"fixed owner {pod} got {ip}, expected {self.fixed[pod][1]}"
            if allocation.owner.workload_kind == "Deployment":
                # A Deployment's addresses are shared: only a retained one is taken over, and
                # only by a pod of the same Deployment.
                for other, (_, held) in list(self.fixed.items()):
                    if held == ip and other != pod:
                        assert other.startswith("api-"), f"{other}'s fixed address went to {pod}"
                        assert not any(h == ip for c, h in self.live.items() if c != container), "not retained"
                        del self.fixed[other]
            self.fixed[pod] = (allocation_owner_key(allocation), ip)
            # A fixed address has one container at a time: a new one takes it over.
            for c, held in list(self.live.items()):
                if held == ip and c != container:
                    del self.live[c]
        self.live[container] = ip

    def _allocate(self, replica: IPAM, pod: str, container: str, node: str) -> None:
        uid = self.uids.setdefault(pod, f"uid-{next(self.ids)}")
        self.containers.setdefault(container, (pod, uid))
        # A new pod of the Deployment must take over an address its workload retains.
        retained = set()
        if pod.startswith("api-") and pod not in self.fixed and container not in self.live:
            in_use = set(self.live.values())
            retained = {ip for other, (_, ip) in self.fixed.items() if other.startswith("api-") and ip not in in_use}
        try:
            result = self.run(replica.allocate(allocate_request(pod, container, uid=uid, node=node)))
        except ApiError as err:
            assert err.code.name == "RESOURCE_EXHAUSTED", err.message
            assert not retained, "a retained address of the workload was there to take"
            return
        if retained:
            assert result.reused and result.allocation.ip in retained, (result.allocation.ip, retained)
        self._record(container, result.allocation, result.reused)

    @rule(pod=st.sampled_from(PODS), node=st.sampled_from(NODES), replica=st.integers(0, 1))
    def allocate_new_container(self, pod: str, node: str, replica: int) -> None:
        self._allocate(self.replicas[replica], pod, f"c{next(self.ids)}", node)

    @rule(data=st.data(), replica=st.integers(0, 1))
    def allocate_again(self, data: st.DataObject, replica: int) -> None:
        if not self.live:
            return
        container = data.draw(st.sampled_from(sorted(self.live)))
        before = self.live[container]
        self._allocate(self.replicas[replica], self._pod_of(container), container, "node-1")
        assert self.live[container] == before

    @rule(pods=st.lists(st.sampled_from(PODS), min_size=2, max_size=8, unique=True))
    def burst_on_both_replicas(self, pods: list[str]) -> None:
        jobs = []
        for i, pod in enumerate(pods):
            container = f"c{next(self.ids)}"
            uid = self.uids.setdefault(pod, f"uid-{next(self.ids)}")
            self.containers[container] = (pod, uid)
            jobs.append((container, pod, self.replicas[i % 2].allocate(allocate_request(pod, container, uid=uid))))

        async def all_of() -> list[Any]:
            return await asyncio.gather(*(j[2] for j in jobs), return_exceptions=True)

        for (container, _pod, _), result in zip(jobs, self.run(all_of()), strict=True):
            if isinstance(result, ApiError):
                assert result.code.name == "RESOURCE_EXHAUSTED", result.message
                continue
            assert not isinstance(result, BaseException), result
            self._record(container, result.allocation, result.reused)

    @rule(data=st.data(), stale_uid=st.booleans())
    def release(self, data: st.DataObject, stale_uid: bool) -> None:
        if not self.containers:
            return
        container = data.draw(st.sampled_from(sorted(self.containers)))
        _, uid = self.containers[container]
        result = self.run(self.replicas[0].release(container, "eth0", "someone-else" if stale_uid else uid))
        if stale_uid or container not in self.live:
            assert not result.found, f"release of {container} (stale: {stale_uid}) freed something"
            return
        assert result.found
        ip = self.live.pop(container)
        if not result.retained:
            self.freed_at[ip] = self.clock()

    @rule()
    def restart(self) -> None:
        self.replicas = [self._replica(), self._replica()]

    @rule(seconds=st.sampled_from([1.0, 5.0, 11.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(data=st.data())
    def garbage_collect(self, data: st.DataObject) -> None:
        valid = data.draw(st.sets(st.sampled_from(sorted(self.live) or ["none"])))
        self.clock.advance(1)
        collected = self.run(
            self.replicas[1].garbage_collect("node-1", {(c, "eth0") for c in valid}, dry_run=False, min_age=0)
        )
        for a in collected:
            self.live.pop(a.container_id, None)
            if not a.owner.pod_name.startswith("db-"):
                self.freed_at[a.ip] = self.clock()

    @rule(replicas=st.integers(0, 4))
    def scale_down(self, replicas: int) -> None:
        w = ipam_pb2.WorkloadRef(namespace="default", kind="StatefulSet", name="db")
        released, deferred = self.run(
            self.replicas[0].release_workload(w, deleted=False, replicas=replicas, keep=set(), force=False)
        )
        for a in released:
            self.fixed.pop(a.owner.pod_name, None)
            self.freed_at[a.ip] = self.clock()
        for a in deferred:
            # No longer fixed: its container's release frees it.
            self.fixed.pop(a.owner.pod_name, None)

    @invariant()
    def one_owner_per_address_and_bitmaps_agree(self) -> None:
        allocations, _ = self.run(self.storage.allocations("", "", 10_000))
        ips = [s.allocation.ip for s in allocations]
        assert len(ips) == len(set(ips))
        attachments = [
            (s.allocation.container_id, s.allocation.ifname) for s in allocations if s.allocation.container_id
        ]
        assert len(attachments) == len(set(attachments))
        entry = self.run(self.storage.get_pool("p"))
        assert entry is not None
        layout = pool_layout(entry.pool)
        owned = set()
        for block in self.run(self.storage.blocks("p")):
            for bit in range(BLOCK_SIZE):
                if block.owned(bit):
                    owned.add(layout.ip_at(block.index * BLOCK_SIZE + bit))
        assert owned == set(ips)

    @invariant()
    def fixed_owners_hold_their_address(self) -> None:
        for key, ip in self.fixed.values():
            held = self.run(self.storage.by_owner(key))
            assert held is not None and held.allocation.ip == ip

    @invariant()
    def live_containers_hold_theirs(self) -> None:
        for container, ip in self.live.items():
            held = self.run(self.storage.by_attachment(container, "eth0"))
            assert held is not None and held.allocation.ip == ip, container


IPAMMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestIPAMStateMachine = IPAMMachine.TestCase
