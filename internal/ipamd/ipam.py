"""The IPAM core: pools, bindings, allocate, release, garbage collection, over an IP storage and
the IP providers. It speaks protos and raises ApiError; it knows nothing of gRPC servers.

Invariants (the storage's compare-and-swap does the enforcing, this module the deciding):
- An address has at most one owner, across any number of replicas: it is taken by a `reserve`
  that compares its block's version; a lost race re-reads and tries again inside (up to
  `attempts` times), so callers never see it.
- Allocate is idempotent for (container id, ifname): the interface index is written in the
  same transaction as the address, and a repeated call returns what it points to.
- A fixed address (policy IMMUTABLE or NEVER) is indexed by its owner (namespace, workload
  kind and name, pod name): Release only detaches it (RETAINED), and the owner's next Allocate,
  on any node the pool serves, gets it back and takes it over from a stale container.
- A Release names its interface, and the interface index moves with every attach: a stale DEL
  of an old container finds nothing, and one carrying another pod uid is ignored.
- A freed address cools down before reuse: its bit is clear but it is in the block's cooling
  map until then.
- The IP provider is told after the storage decided (reserve, then bind); when it fails the
  reservation is rolled back by a compare-and-swap on our own version only, after the
  provider released the address: a slow provider never yields two owners. If even that
  release fails, the allocation stays (its container's DEL or GC frees it later).
- Picking an address reads one block (cached) and writes it: the cost does not depend on how
  full the pool is (tke.internal.ipamd.blocks; the policy itself is the pure
  tke.internal.ipamd.allocator). Talking to the provider is tke.internal.ipamd.provisioning.
- A pod's workload is what its caller names, else what the WorkloadResolver (the cluster's
  Kubernetes API) says from the pod's ownerReferences, else the pod itself: never a guess from
  its name. When the resolver cannot answer, Allocate and LookupBinding are UNAVAILABLE: a pod
  of a workload with fixed addresses never gets a bare pod's address by accident.
- `reclaim` frees an allocation only at the version its caller examined: a pod that came back
  and re-attached it meanwhile keeps it.
- A caller restricted to a node (tke.internal.ipamd.noderule) gets an address, new (of any release
  policy) or a fixed one taken over, only for a pod bound to its node and for that pod's own
  workload (`NodeCaller.admit_pod`, `admit_workload`: one read of the Kubernetes API per call),
  and only while its node holds fewer than `max_allocations_per_node` addresses, attached or
  retained since their last container there (`NodeCaller.within_limit`: one count of the
  storage's node index per new address, or per address another node held), checked before
  anything is written or bound. Its interface's own address is looked up first, so a repeated
  Allocate costs neither, and taking back its own retained address costs no count. One node's
  new allocations are serialized in each replica (`NodeLocks`) from the count to the write (not
  during the API read), so the limit is exact with one replica and overshot by at most one
  address per other replica. A caller for no node (an operator, the unix socket of a hosted
  tke-ipamd) pays none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

from google.protobuf import field_mask_pb2, timestamp_pb2

from tke.internal.ipamd import errors
from tke.internal.ipamd.bindings import choose_binding, ordinal
from tke.internal.ipamd.blocks import PoolBlocks
from tke.internal.ipamd.hints import Hints
from tke.internal.ipamd.keys import address_key
from tke.internal.ipamd.noderule import MAX_ALLOCATIONS_PER_NODE, NodeCaller
from tke.internal.ipamd.pools import admits, gateway_of, overlap, pool_layout, serves, validate_pool
from tke.internal.ipamd.provider import Assignment, IPProvider, ProviderError, Reconciling
from tke.internal.ipamd.provisioning import Provisioner, provider_owner
from tke.internal.ipamd.storage import (
    IPStorage,
    Lost,
    NamespaceBindings,
    PoolEntry,
    PoolExists,
    Stored,
    allocation_owner_key,
    is_fixed,
    owner_key,
)
from tke.internal.ipamd.workloads import (
    POD,
    STABLE_NAME_KINDS,
    NoResolver,
    PodPlacement,
    ResolverUnavailable,
    Workload,
    WorkloadResolver,
)
from tke.internal.rpc.errors import ApiError, already_exists, invalid, invalid_field, not_found, unavailable
from tke.ipam.v1 import ipam_pb2

log = logging.getLogger(__name__)

POD_DELETE = ipam_pb2.RELEASE_POLICY_POD_DELETE
ATTACHED = ipam_pb2.ALLOCATION_STATE_ATTACHED
RETAINED = ipam_pb2.ALLOCATION_STATE_RETAINED
POOL_LIST_TTL = 1.0
# What UpdatePool may change on a pool in use: none of it renumbers the addresses.
MUTABLE_POOL_FIELDS = ("routes", "dns", "node_subnets", "node_names", "labels", "cooldown_seconds", "namespaces")
# Bounds of the hints kept in memory (tke.internal.ipamd.hints): interfaces this replica
# handed an address to, and namespaces whose bindings it read (a namespace with more bindings
# than BINDINGS_PER_HINT is read every time instead: the memory stays bounded).
ATTACHMENT_HINTS = 16384
BINDING_HINTS = 1024
BINDINGS_PER_HINT = 256


def _timestamp(now: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(now * 1e9))
    return ts


def _copy(a: ipam_pb2.Allocation) -> ipam_pb2.Allocation:
    c = ipam_pb2.Allocation()
    c.CopyFrom(a)
    return c


def normalize_owner(owner: ipam_pb2.Owner) -> ipam_pb2.Owner:
    """A bare pod is its own workload: kind "Pod", name = the pod's."""
    o = ipam_pb2.Owner()
    o.CopyFrom(owner)
    if not o.workload_kind and not o.workload_name:
        o.workload_kind, o.workload_name = "Pod", o.pod_name
    return o


# Raises (an ApiError) for an allocation the caller may not change.
Admit = Callable[[ipam_pb2.Allocation], None]


class NodeLocks:
    """A lock per node with an Allocate in progress, dropped when no call holds or awaits it:
    memory bounded by the nodes calling at once."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, node: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(node, (asyncio.Lock(), 0))
        self._locks[node] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[node]
            if users == 1:
                del self._locks[node]
            else:
                self._locks[node] = (lock, users - 1)


@dataclass(frozen=True)
class AllocateResult:
    allocation: ipam_pb2.Allocation
    reused: bool


@dataclass(frozen=True)
class ReleaseResult:
    found: bool
    retained: bool = False
    allocation: ipam_pb2.Allocation | None = None


class IPAM:
    def __init__(
        self,
        storage: IPStorage,
        providers: Mapping[str, IPProvider],
        *,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.time,
        attempts: int = 200,
        resolver: WorkloadResolver | None = None,
        max_allocations_per_node: int = MAX_ALLOCATIONS_PER_NODE,
    ) -> None:
        self.storage = storage
        self.max_allocations_per_node = max_allocations_per_node
        self._node_locks = NodeLocks()
        self.resolver: WorkloadResolver = resolver or NoResolver()
        self.provisioning = Provisioner(providers)
        self.cooldown = cooldown
        self.clock = clock
        self.attempts = attempts
        self._pools: dict[str, PoolBlocks] = {}
        # Hints (tke.internal.ipamd.hints): the allocations this replica handed out, so that
        # their Release needs no read, and the namespaces' bindings, so that an Allocate needs
        # none; the writes made from them compare the versions they carry.
        self._attached: Hints[tuple[str, str], Stored] = Hints(ATTACHMENT_HINTS)
        self._bindings: Hints[str, NamespaceBindings] = Hints(BINDING_HINTS)
        # The list of pools, re-read at most every POOL_LIST_TTL seconds: it only proposes
        # candidates, and every reserve compares the chosen pool's version anyway.
        self._pool_list: tuple[float, list[PoolEntry]] = (-1.0, [])

    # -- pools --------------------------------------------------------------------------------
    async def create_pool(self, pool: ipam_pb2.Pool) -> ipam_pb2.Pool:
        violations = validate_pool(pool, self.provisioning.names())
        if violations:
            raise invalid(violations)
        await self.provisioning.check_subnet(pool)
        stored = ipam_pb2.Pool()
        stored.CopyFrom(pool)
        stored.ClearField("status")
        stored.creation_timestamp.CopyFrom(_timestamp(self.clock()))
        if not stored.gateway:
            stored.gateway = gateway_of(stored)
        for _ in range(self.attempts):
            # Checked against the whole set and stored compared to its version: two replicas
            # creating overlapping pools at once cannot both succeed.
            current = await self.storage.pool_set()
            if any(e.pool.name == pool.name for e in current.pools):
                raise already_exists("pool", pool.name, "")
            if shared := overlap(stored, (e.pool for e in current.pools)):
                raise errors.pool_overlaps(stored, shared.other, shared.first, shared.last)
            try:
                created = await self.storage.create_pool(stored, pool_set_version=current.version)
            except PoolExists:
                raise already_exists("pool", pool.name, "") from None
            if not isinstance(created, Lost):
                entry = created
                break
        else:
            raise errors.contention()
        self._pools.pop(pool.name, None)
        self._pool_list = (-1.0, [])
        return await self._with_status(entry)

    async def _with_status(self, entry: PoolEntry) -> ipam_pb2.Pool:
        out = ipam_pb2.Pool()
        out.CopyFrom(entry.pool)
        now = self.clock()
        blocks = await self.storage.blocks(entry.pool.name)
        out.status.capacity = pool_layout(entry.pool).size
        out.status.allocated = sum(b.count() for b in blocks)
        out.status.cooling = sum(b.cooling_count(now) for b in blocks)
        return out

    async def get_pool(self, name: str) -> ipam_pb2.Pool:
        entry = await self.storage.get_pool(name)
        if entry is None:
            raise not_found("pool", name, "")
        return await self._with_status(entry)

    async def list_pools(self) -> list[ipam_pb2.Pool]:
        return [await self._with_status(e) for e in await self.storage.list_pools()]

    async def update_pool(self, pool: ipam_pb2.Pool, paths: list[str]) -> ipam_pb2.Pool:
        """Replace the mutable fields named in `paths` (all of them when empty)."""
        immutable = [p for p in paths if p not in MUTABLE_POOL_FIELDS]
        if immutable:
            raise invalid_field(
                "update_mask", f"{immutable[0]} cannot change; mutable: {', '.join(MUTABLE_POOL_FIELDS)}"
            )
        mask = field_mask_pb2.FieldMask(paths=paths or list(MUTABLE_POOL_FIELDS))
        for _ in range(self.attempts):
            entry = await self.storage.get_pool(pool.name)
            if entry is None:
                raise not_found("pool", pool.name, "")
            if entry.deleting:
                raise errors.pool_deleting(pool.name)
            new = ipam_pb2.Pool()
            new.CopyFrom(entry.pool)
            mask.MergeMessage(pool, new, replace_message_field=True, replace_repeated_field=True)
            violations = validate_pool(new, self.provisioning.names())
            if violations:
                raise invalid(violations)
            updated = await self.storage.update_pool(entry, new, deleting=False)
            if updated is None:
                continue  # changed meanwhile: apply the mask to the latest
            self._pool_list = (-1.0, [])
            if pool.name in self._pools:
                self._pools[pool.name].adopt(updated)
            return await self._with_status(updated)
        raise errors.contention()

    async def delete_pool(self, name: str) -> None:
        entry = await self.storage.get_pool(name)
        if entry is None:
            raise not_found("pool", name, "")
        # Mark first: every reserve compares the pool's version, so none can slip in between
        # the check for allocations and the delete.
        marked = await self.storage.update_pool(entry, entry.pool, deleting=True)
        if marked is None:
            raise errors.contention()
        if await self.storage.has_allocations(name):
            await self.storage.update_pool(marked, marked.pool, deleting=False)
            raise errors.pool_in_use(name)
        if not await self.storage.delete_pool(marked):
            raise errors.contention()
        self._pools.pop(name, None)
        self._pool_list = (-1.0, [])

    async def _pool(self, name: str) -> PoolBlocks:
        st = self._pools.get(name)
        if st is None:
            entry = await self.storage.get_pool(name)
            if entry is None:
                raise not_found("pool", name, "")
            # Concurrent first calls all get here: keep one state (one cache, one lock per block).
            fresh = PoolBlocks(self.storage, entry, clock=self.clock, attempts=self.attempts)
            st = self._pools.setdefault(name, fresh)
        return st

    def _cooldown_of(self, pool: ipam_pb2.Pool) -> float:
        return float(pool.cooldown_seconds) if pool.cooldown_seconds else self.cooldown

    # -- bindings -----------------------------------------------------------------------------
    async def put_binding(self, binding: ipam_pb2.Binding) -> ipam_pb2.Binding:
        b = ipam_pb2.Binding()
        b.CopyFrom(binding)
        if b.release_policy == ipam_pb2.RELEASE_POLICY_UNSPECIFIED:
            b.release_policy = POD_DELETE
        b.update_timestamp.CopyFrom(_timestamp(self.clock()))
        self._bindings.forget(b.workload.namespace)
        await self.storage.put_binding(b)
        return b

    async def get_binding(self, w: ipam_pb2.WorkloadRef) -> ipam_pb2.Binding:
        b = await self.storage.get_binding(w.namespace, w.kind, w.name)
        if b is None:
            raise not_found("binding", f"{w.kind}/{w.name}", w.namespace)
        return b

    async def resolve(self, namespace: str, pod_name: str) -> Workload:
        """The pod's workload as the resolver knows it; a pod it does not know is its own."""
        try:
            found = await self.resolver.workload_of(namespace, pod_name)
        except ResolverUnavailable as err:
            raise unavailable(f"cannot resolve the workload of pod {namespace}/{pod_name}: {err}") from None
        return found or Workload(namespace, POD, pod_name)

    async def lookup_binding(self, namespace: str, pod_name: str, kind: str, name: str) -> ipam_pb2.Binding | None:
        """The binding of the pod's workload: the one the caller names, else the resolved one.
        A name without a kind finds the namespace's first binding of a workload of that name."""
        if name and kind:
            return await self.storage.get_binding(namespace, kind, name)
        if name:
            return choose_binding(await self.storage.list_bindings(namespace), "", name)
        w = await self.resolve(namespace, pod_name)
        return await self.storage.get_binding(namespace, w.kind, w.name)

    async def _bindings_of(self, namespace: str, *, fresh: bool) -> tuple[NamespaceBindings, bool]:
        """The namespace's bindings, and whether they are a hint from memory."""
        if not fresh:
            seen = self._bindings.get(namespace)
            if seen is not None:
                return seen, True
        seen = await self.storage.namespace_bindings(namespace)
        if len(seen.bindings) <= BINDINGS_PER_HINT:
            self._bindings.remember(namespace, seen)
        return seen, False

    async def delete_binding(self, w: ipam_pb2.WorkloadRef) -> None:
        self._bindings.forget(w.namespace)
        if not await self.storage.delete_binding(w.namespace, w.kind, w.name):
            raise not_found("binding", f"{w.kind}/{w.name}", w.namespace)

    # -- allocate -----------------------------------------------------------------------------
    async def allocate(self, req: ipam_pb2.AllocateRequest, *, node: NodeCaller | None = None) -> AllocateResult:
        """`node`: the caller speaks for that node (the node rule); an address then goes to the
        new container only for a pod the Kubernetes API says is bound to it and belongs to the
        workload the address is for, and only while the node holds fewer than
        max_allocations_per_node."""
        if node is None:
            return await self._allocate(req, None, None)
        async with contextlib.AsyncExitStack() as held_until_written:
            return await self._allocate(req, node, held_until_written)

    async def _allocate(
        self,
        req: ipam_pb2.AllocateRequest,
        node: NodeCaller | None,
        held_until_written: contextlib.AsyncExitStack | None,
    ) -> AllocateResult:
        vouched: PodPlacement | None = None
        locked = False
        # A refusal of the node rule that no retry changes (the pod's placement, the node's
        # count): raised as it is, never retried on fresher bindings.
        final: ApiError | None = None

        async def admit(held: ipam_pb2.Allocation | None, owner: ipam_pb2.Owner, *, fixed: bool = True) -> None:
            # Before the node gets an address: `held`, a fixed one taken over, or a new one.
            # The pod is read once per call when the API vouches for it (without an API, per
            # address); its workload is checked against each owner an attempt settles on.
            nonlocal vouched, final, locked
            if node is None or held_until_written is None:
                return
            try:
                if vouched is None:
                    vouched = await node.admit_pod(self.resolver, owner, held, fixed=fixed)
                if vouched is not None:
                    node.admit_workload(owner, held, vouched, fixed=fixed)
                # The node's count has its own addresses, attached or retained: taking one back
                # adds nothing; a new address, or one another node held, adds one.
                if held is None or held.node != req.node:
                    if not locked:
                        # From the count to the write (this call's end), no other Allocate of
                        # the node's in this replica: the limit is exact here.
                        await held_until_written.enter_async_context(self._node_locks.hold(req.node))
                        locked = True
                    node.within_limit(await self.storage.count_by_node(req.node), self.max_allocations_per_node)
            except ApiError as err:
                if errors.reason_of(err) != "NOT_THE_PODS_WORKLOAD":
                    final = err  # the workload may depend on the bindings: that one is decided again
                raise

        owner = ipam_pb2.Owner()
        owner.CopyFrom(req.owner)
        if not owner.workload_name:
            # The runtime named only the pod (kubelet does): its controller says whose it is.
            w = await self.resolve(owner.namespace, owner.pod_name)
            owner.workload_kind, owner.workload_name = w.kind, w.name
        named = owner
        # The interface's own address is looked up only after a lost race or a refusal: the
        # reserve transaction already compares the interface index, so a first Allocate (the
        # common case) costs no read for it. The namespace's bindings come from memory on the
        # first attempt: the write compares their version, and every retry reads them again.
        # A node's caller looks first: its repeated Allocate then costs no count and no API read.
        look_first = node is not None
        for attempt in range(self.attempts):
            seen, hinted = await self._bindings_of(named.namespace, fresh=attempt > 0)
            owner = ipam_pb2.Owner()
            owner.CopyFrom(named)
            binding = choose_binding(seen.bindings, owner.workload_kind, owner.workload_name)
            if binding is not None and not owner.workload_kind:
                owner.workload_kind = binding.workload.kind
            owner = normalize_owner(owner)
            policy = (binding.release_policy if binding else 0) or req.release_policy or POD_DELETE
            pool_name = req.pool or (binding.pool if binding else "")
            network = binding.network if binding else ""
            if look_first:
                existing = await self._existing(req, owner)
                if existing is not None:
                    return AllocateResult(existing, True)
            look_first = True
            try:
                if policy in (ipam_pb2.RELEASE_POLICY_IMMUTABLE, ipam_pb2.RELEASE_POLICY_NEVER):
                    key = owner_key(owner.namespace, owner.workload_kind, owner.workload_name, owner.pod_name)
                    held = await self.storage.by_owner(key)
                    if held is None and owner.workload_kind not in STABLE_NAME_KINDS:
                        held = await self._retained_of_workload(owner, req)
                    if held is not None:
                        moved = await self._reattach(held, req, owner, seen, admit)
                        if moved is not None:
                            return AllocateResult(moved, True)
                        continue
                    await admit(None, owner)
                else:
                    await admit(None, owner, fixed=False)
                fresh = await self._allocate_new(req, owner, policy, pool_name, network, seen=seen)
            except ApiError as err:
                # An exhausted pool or a taken address is no error for an interface that
                # already has its address (a repeated Allocate).
                existing = await self._existing(req, owner)
                if existing is not None:
                    return AllocateResult(existing, True)
                if hinted and err is not final:
                    continue  # refused on bindings from memory: decide again on the storage's
                raise
            if fresh is not None:
                self._attached.remember((req.container_id, req.ifname), fresh)
                return AllocateResult(fresh.allocation, False)
        raise errors.contention()

    async def _existing(self, req: ipam_pb2.AllocateRequest, owner: ipam_pb2.Owner) -> ipam_pb2.Allocation | None:
        """The interface's current address if it is this pod's; raises if it is another's."""
        existing = await self.storage.by_attachment(req.container_id, req.ifname)
        if existing is None:
            return None
        a = existing.allocation
        if (a.owner.namespace, a.owner.pod_name) != (owner.namespace, owner.pod_name):
            raise errors.attachment_in_use(req.container_id, req.ifname, errors.holder(a))
        self._attached.remember((req.container_id, req.ifname), existing)
        # A retried ADD: the first try may have failed at the provider after the storage kept
        # the address, so make sure again (both steps are idempotent).
        await self.provisioning.provide((await self._pool(a.pool)).entry.pool, a)
        return a

    async def _retained_of_workload(self, owner: ipam_pb2.Owner, req: ipam_pb2.AllocateRequest) -> Stored | None:
        """A RETAINED address of the pod's workload that the node may use, for workloads whose
        pods get new names (Deployments, DaemonSets, ...): the fixed addresses follow the
        workload, and a new pod takes over one a gone pod left."""
        stored = await self.storage.by_workload(owner.namespace, owner.workload_kind, owner.workload_name)
        for s in sorted(stored, key=lambda s: (s.allocation.pool, address_key(s.allocation.ip))):
            if s.allocation.state != RETAINED or (req.ip and req.ip != s.allocation.ip):
                continue
            if await self._serves(await self._pool(s.allocation.pool), req):
                return s
        return None

    async def _reattach(
        self,
        held: Stored,
        req: ipam_pb2.AllocateRequest,
        owner: ipam_pb2.Owner,
        seen: NamespaceBindings,
        admit: Callable[[ipam_pb2.Allocation, ipam_pb2.Owner], Awaitable[None]],
    ) -> ipam_pb2.Allocation | None:
        """Give a fixed address back to its owner's new container; None on a lost race. `admit`
        raises when the caller may not move it to `owner` (the node rule), before anything
        changes."""
        a = held.allocation
        st = await self._pool(a.pool)
        if (a.container_id, a.ifname) == (req.container_id, req.ifname):
            await self.provisioning.provide(st.entry.pool, a)
            return a  # a repeated Allocate
        if not await self._serves(st, req):
            raise errors.node_not_served(a.pool, req.node)
        if req.ip and req.ip != a.ip:
            raise errors.address_in_use(a.pool, req.ip, f"{errors.holder(a)}; the owner's fixed address is {a.ip}")
        await admit(a, owner)
        now = self.clock()
        new = _copy(a)
        # The owner key moves with it when a renamed pod of the workload takes it over.
        new.owner.pod_name, new.owner.pod_uid = owner.pod_name, owner.pod_uid
        new.container_id, new.ifname, new.node, new.state = req.container_id, req.ifname, req.node, ATTACHED
        new.attach_timestamp.CopyFrom(_timestamp(now))
        if a.node != req.node or a.state != ATTACHED:
            # Reserve again too (idempotent): a release racing with this attach may have
            # dropped the reservation at the provider.
            await self.provisioning.provide(st.entry.pool, new)
        outcome = await self.storage.replace(held, new, bindings=seen)
        if isinstance(outcome, Lost):
            return None
        self._attached.remember((new.container_id, new.ifname), outcome)
        if a.container_id:
            log.info("fixed address %s of %s taken over from container %s", a.ip, errors.holder(new), a.container_id)
        return new

    async def _candidate_pools(self, req: ipam_pb2.AllocateRequest, pool_name: str) -> list[PoolBlocks]:
        if pool_name:
            try:
                st = await self._pool(pool_name)
            except ApiError:
                if req.pool:
                    raise invalid_field("pool", f"no pool named {pool_name!r}") from None
                raise errors.binding_pool_missing(pool_name) from None
            if not await self._serves(st, req):
                raise errors.node_not_served(pool_name, req.node)
            if not admits(st.entry.pool, req.owner.namespace):
                await st.reload()  # a cached definition: another replica may have added it
                if not admits(st.entry.pool, req.owner.namespace):
                    raise errors.pool_not_allowed(pool_name, req.owner.namespace)
            if st.entry.deleting:
                await st.refresh()  # raises while it is still being deleted
            return [st]
        for fresh in (False, True):
            out = []
            for entry in await self._list_pools(fresh=fresh):
                if (
                    entry.deleting
                    or not serves(entry.pool, req.node, req.node_ip)
                    or not admits(entry.pool, req.owner.namespace)
                ):
                    continue
                out.append(await self._pool(entry.pool.name))
            if out:
                return out
        raise errors.no_pool_for_node(req.node, req.owner.namespace)

    async def _list_pools(self, *, fresh: bool = False) -> list[PoolEntry]:
        at, entries = self._pool_list
        now = time.monotonic()
        if fresh or now - at > POOL_LIST_TTL:
            entries = await self.storage.list_pools()
            self._pool_list = (now, entries)
        return entries

    async def _serves(self, st: PoolBlocks, req: ipam_pb2.AllocateRequest) -> bool:
        """Whether the pool serves the request's node; a "no" from a cached definition is
        checked again (another replica may have added the node)."""
        if serves(st.entry.pool, req.node, req.node_ip):
            return True
        await st.reload()
        return serves(st.entry.pool, req.node, req.node_ip)

    def _new_allocation(
        self,
        st: PoolBlocks,
        ip: str,
        req: ipam_pb2.AllocateRequest,
        *,
        owner: ipam_pb2.Owner,
        policy: int,
        network: str,
    ) -> ipam_pb2.Allocation:
        pool = st.entry.pool
        now = _timestamp(self.clock())
        gateway = gateway_of(pool)
        a = ipam_pb2.Allocation(
            address=f"{ip}/{st.layout.network.prefixlen}",
            ip=ip,
            pool=pool.name,
            gateway=gateway,
            vlan=pool.vlan,
            container_id=req.container_id,
            ifname=req.ifname,
            node=req.node,
            release_policy=policy,  # type: ignore[arg-type]
            state=ATTACHED,
            network=network,
        )
        a.owner.CopyFrom(owner)
        if pool.routes:
            a.routes.extend(pool.routes)
        else:
            a.routes.append(ipam_pb2.Route(dst="0.0.0.0/0", gw=gateway))
        a.dns.CopyFrom(pool.dns)
        a.allocate_timestamp.CopyFrom(now)
        a.attach_timestamp.CopyFrom(now)
        return a

    async def _allocate_new(
        self,
        req: ipam_pb2.AllocateRequest,
        owner: ipam_pb2.Owner,
        policy: int,
        pool_name: str,
        network: str,
        *,
        seen: NamespaceBindings,
    ) -> Stored | None:
        """A new address; None when the interface or owner got one meanwhile (re-evaluate)."""
        pools = await self._candidate_pools(req, pool_name)
        if req.ip:
            pools = [st for st in pools if st.layout.offset_of(req.ip) is not None]
            if not pools:
                names = pool_name or "any pool serving the node"
                raise invalid_field("ip", f"{req.ip} is not an address {names} hands out")

        def make(st: PoolBlocks) -> Callable[[str], ipam_pb2.Allocation]:
            return lambda ip: self._new_allocation(st, ip, req, owner=owner, policy=policy, network=network)

        for st in pools:
            outcome: Stored | Lost | None
            try:
                if req.ip:
                    outcome = await st.take_address(req.ip, make(st), seen)
                else:
                    outcome = await st.take_any(make(st), seen)
            except ApiError as err:
                if pool_name or not errors.is_pool_gone(err):
                    raise
                continue  # deleted since the pool list was read: the next pool
            if outcome is None:
                continue  # exhausted: the next pool
            if isinstance(outcome, Lost):
                return None
            await self._provide(st, outcome)
            return outcome
        raise errors.exhausted([st.entry.pool.name for st in pools])

    # -- the IP provider ----------------------------------------------------------------------
    async def reconcile_providers(self, page: int = 500) -> None:
        """Hand each provider that reconciles (provider.Reconciling) the allocations of every
        pool it backs, so that the environment agrees with the storage after a crash. A
        provider that fails is logged and left for the next start."""
        for entry in await self._list_pools(fresh=True):
            pool = entry.pool
            if self.provisioning.is_static(pool):
                continue
            provider = self.provisioning.providers.get(pool.provider.name)
            if not isinstance(provider, Reconciling):
                continue

            try:
                changes = await provider.reconcile(pool.provider.subnet_id, partial(self._assignments, pool.name, page))
            except ProviderError as err:
                log.warning("pool %s: reconciling with its IP provider failed: %s", pool.name, err)
                continue
            for change in changes:
                log.info("pool %s: %s", pool.name, change)

    async def _assignments(self, pool: str, page: int) -> list[Assignment]:
        """Every allocation of `pool`, as its provider sees them."""
        out: list[Assignment] = []
        cursor = ""
        while True:
            stored, cursor = await self.storage.allocations(pool, cursor, page)
            out += [Assignment(s.allocation.ip, s.allocation.node, provider_owner(s.allocation)) for s in stored]
            if not cursor:
                return out

    async def _provide(self, st: PoolBlocks, stored: Stored) -> None:
        """Reserve and bind a newly taken address in the environment, or roll back."""
        try:
            await self.provisioning.provide(st.entry.pool, stored.allocation)
        except ApiError:
            await self._rollback(st, stored)
            raise

    async def _rollback(self, st: PoolBlocks, stored: Stored) -> None:
        a = stored.allocation
        try:
            # The environment first: once the storage frees the address another owner may
            # bind it, so it must not still be ours out there.
            await self.provisioning.release(st.entry.pool, a)
        except ApiError:
            log.error(
                "rollback of %s: the provider did not release it; it stays allocated to container %s "
                "until its DEL or garbage collection",
                a.ip,
                a.container_id,
            )
            return
        await st.give_back(stored, self._cooldown_of(st.entry.pool))

    # -- release ------------------------------------------------------------------------------
    async def _give_back(self, stored: Stored) -> bool:
        """Release an address for good: the provider first (so nobody can take it from the
        storage while the environment still has it), then the storage. False if the allocation
        changed meanwhile; if it is still there (re-attached, for example), the provider's
        reservation is made again for it."""
        st = await self._pool(stored.allocation.pool)
        await self.provisioning.release(st.entry.pool, stored.allocation)
        if await st.give_back(stored, self._cooldown_of(st.entry.pool)):
            return True
        current = await self.storage.by_address(stored.allocation.pool, stored.allocation.ip)
        if current is not None:
            try:
                await self.provisioning.provide(st.entry.pool, current.allocation)
            except ApiError:
                log.error("%s changed while being released and could not be reserved again", current.allocation.ip)
        return False

    async def release(
        self, container_id: str, ifname: str, pod_uid: str = "", *, admit: Admit | None = None
    ) -> ReleaseResult:
        """`admit` (the node rule, tke.internal.ipamd.noderule) raises for an allocation the
        caller may not release; it sees the version the release then writes compared."""
        # An address this replica handed out needs no read: the write below compares it.
        hint = self._attached.take((container_id, ifname))
        for _ in range(self.attempts):
            held = hint if hint is not None else await self.storage.by_attachment(container_id, ifname)
            hinted, hint = hint is not None, None
            if held is None:
                return ReleaseResult(found=False)
            a = held.allocation
            if admit is not None:
                try:
                    admit(a)
                except ApiError:
                    if hinted:
                        continue  # refused on what the storage says, not on a hint
                    raise
            if pod_uid and a.owner.pod_uid and pod_uid != a.owner.pod_uid:
                if hinted:
                    continue  # refused without a write: on what the storage says, not a hint
                log.info("ignoring release of %s by pod uid %s: it belongs to uid %s", a.ip, pod_uid, a.owner.pod_uid)
                return ReleaseResult(found=False)
            if is_fixed(a):
                detached = _copy(a)
                detached.container_id, detached.ifname, detached.state = "", "", RETAINED
                if isinstance(await self.storage.replace(held, detached), Lost):
                    continue
                return ReleaseResult(found=True, retained=True, allocation=a)
            if await self._give_back(held):
                return ReleaseResult(found=True, allocation=a)
        raise errors.contention()

    async def release_workload(
        self, w: ipam_pb2.WorkloadRef, *, deleted: bool, replicas: int | None, keep: set[str], force: bool
    ) -> tuple[list[ipam_pb2.Allocation], list[ipam_pb2.Allocation]]:
        stored = await self.storage.by_workload(w.namespace, w.kind, w.name)
        chosen = stored if deleted else self._scaled_down(w, stored, replicas, keep)
        released: list[ipam_pb2.Allocation] = []
        deferred: list[ipam_pb2.Allocation] = []
        for s in chosen:
            a = s.allocation
            if a.release_policy == ipam_pb2.RELEASE_POLICY_NEVER and not force:
                continue
            if a.state == RETAINED:
                if await self._give_back(s):
                    released.append(a)
                continue
            # Still attached: the container's own Release will free it.
            loose = _copy(a)
            loose.release_policy = POD_DELETE
            outcome = await self.storage.replace(s, loose)
            if not isinstance(outcome, Lost):
                self._attached.remember((loose.container_id, loose.ifname), outcome)
                deferred.append(loose)
        return released, deferred

    @staticmethod
    def _scaled_down(
        w: ipam_pb2.WorkloadRef, stored: list[Stored], replicas: int | None, keep: set[str]
    ) -> list[Stored]:
        """The addresses a scale-down to `replicas` (and/or to the pods in `keep`) frees. The
        addresses of the pods in `keep` are never among them."""
        if replicas is None:
            return [s for s in stored if s.allocation.owner.pod_name not in keep]
        if w.kind in STABLE_NAME_KINDS:
            # Pods "<workload>-<ordinal>": those at or above the new replica count go.
            out = []
            for s in stored:
                n = ordinal(s.allocation.owner.pod_name, w.name)
                if n is not None and n >= replicas and s.allocation.owner.pod_name not in keep:
                    out.append(s)
            return out
        # Pods without ordinals share the workload's addresses: keep `replicas` of them, the kept
        # pods' and those in use first, and free the retained ones beyond that.
        held = sum(1 for s in stored if s.allocation.owner.pod_name in keep or s.allocation.state == ATTACHED)
        retained = sorted(
            (s for s in stored if s.allocation.owner.pod_name not in keep and s.allocation.state == RETAINED),
            key=lambda s: address_key(s.allocation.ip),
        )
        return retained[max(0, replicas - held) :]

    async def reclaim(self, examined: Stored) -> bool:
        """Free an allocation whose pod (and, for a fixed address, whose claim) is gone, as
        the workload watcher decided from `examined`: only if it is still at that version
        (an Allocate that attached it meanwhile wins), whatever its state and policy. False
        when it changed or is gone."""
        current = await self.storage.by_address(examined.allocation.pool, examined.allocation.ip)
        if current is None or current.version != examined.version:
            return False
        return await self._give_back(current)

    async def garbage_collect(
        self, node: str, valid: set[tuple[str, str]], *, dry_run: bool, min_age: float, admit: Admit | None = None
    ) -> list[ipam_pb2.Allocation]:
        now = self.clock()
        collected = []
        for stored in await self.storage.by_node(node):
            a = stored.allocation
            if (a.container_id, a.ifname) in valid:
                continue
            if now - a.attach_timestamp.ToNanoseconds() / 1e9 < min_age:
                continue
            if dry_run:
                collected.append(a)
                continue
            try:
                result = await self.release(a.container_id, a.ifname, a.owner.pod_uid, admit=admit)
            except ApiError as err:
                # One address the provider cannot release now must not keep the others; the
                # next collection tries it again.
                log.warning("garbage collection of %s on %s: %s", a.ip, node, err.message)
                continue
            if result.found:
                collected.append(a)
        return collected

    # -- reads --------------------------------------------------------------------------------
    async def get_by_attachment(self, container_id: str, ifname: str) -> ipam_pb2.Allocation:
        held = await self.storage.by_attachment(container_id, ifname)
        if held is None:
            raise not_found("allocation", f"{container_id}/{ifname}", "")
        return held.allocation

    async def get_by_address(self, pool: str, ip: str) -> ipam_pb2.Allocation:
        held = await self.storage.by_address(pool, ip)
        if held is None:
            raise not_found("allocation", f"{pool}/{ip}", "")
        return held.allocation

    async def get_by_owner(self, owner: ipam_pb2.Owner) -> ipam_pb2.Allocation:
        o = normalize_owner(owner)
        held = await self.storage.by_owner(owner_key(o.namespace, o.workload_kind, o.workload_name, o.pod_name))
        if held is None:
            raise not_found("allocation", f"{o.workload_kind}/{o.workload_name}/{o.pod_name}", o.namespace)
        return held.allocation

    async def list_allocations(
        self, req: ipam_pb2.ListAllocationsRequest, page_size: int
    ) -> tuple[list[ipam_pb2.Allocation], str]:
        def wanted(a: ipam_pb2.Allocation) -> bool:
            return (
                (not req.pool or a.pool == req.pool)
                and (not req.node or a.node == req.node)
                and (not req.namespace or a.owner.namespace == req.namespace)
                and (not req.workload_name or a.owner.workload_name == req.workload_name)
                and (not req.pod_name or a.owner.pod_name == req.pod_name)
            )

        if req.node:
            rows = sorted(
                (
                    (f"{s.allocation.pool}/{address_key(s.allocation.ip)}", s.allocation)
                    for s in await self.storage.by_node(req.node)
                ),
                key=lambda r: r[0],
            )
            rows = [r for r in rows if r[0] > req.page_token and wanted(r[1])]
            page = rows[:page_size]
            return [a for _, a in page], page[-1][0] if len(rows) > page_size else ""
        out: list[ipam_pb2.Allocation] = []
        cursor = req.page_token
        while len(out) < page_size:
            chunk, nxt = await self.storage.allocations(req.pool, cursor, page_size - len(out))
            out.extend(s.allocation for s in chunk if wanted(s.allocation))
            if not nxt:
                return out, ""
            cursor = nxt
        return out, cursor


__all__ = ["IPAM", "AllocateResult", "ReleaseResult", "allocation_owner_key", "normalize_owner", "provider_owner"]
