"""The node rule: a caller that speaks for one node acts on that node's addresses only, as
Kubernetes' NodeRestriction keeps a kubelet to its own Node and the pods bound to it.

Who speaks for a node:
- over TCP, an identity that is a node (user "system:node:<name>" in group "system:nodes",
  tke.internal.auth.identity), whatever authorization grants it;
- on the unix socket, every caller, when the daemon knows its own node (`node_name`, or
  `node_name_env` naming the variable the DaemonSet fills from the pod's spec.nodeName).
  Without it the socket serves every node, as a hosted or central tke-ipamd must.

What it may do:
- Allocate and GarbageCollect name the caller's node (and a repeated Allocate does not return
  the address of an interface recorded on another node);
- Release and GetAllocation reach an allocation whose recorded node is the caller's;
- a node identity over TCP also lists only its node's allocations (ListAllocations names it) and
  may not call ReleaseWorkload, which acts on a workload's addresses on every node. The unix
  socket keeps both: in a cluster the platform builds it is how operators reach tke-ipamd, and
  root on the node holds the IP storage's credentials anyway.
- every address the caller's node gets (a new one of any release policy, and a fixed one taken
  over) goes to its new container only for a pod the Kubernetes API says is bound to the caller's
  node (its spec.nodeName; and its uid, when the request carries one), read at that moment
  (`admit_pod`, then `admit_workload`): a node cannot drain a shared pool by allocating for pods
  that exist nowhere or run elsewhere. A fixed address (release policy IMMUTABLE or NEVER: it
  follows its owning pod from node to node) is checked so whether it is new, retained, or attached
  to a container here or on another node. The workload the request names for the pod (or ipamd
  resolved for it) must be the one the API says the pod belongs to (its controller's
  ownerReference; a Deployment's through its ReplicaSet, tke.internal.ipamd.workloads), read in
  the same moment: otherwise a node could name another workload of the namespace for a pod bound
  to it and take that workload's retained address, or allocate from its binding's pool
  (NOT_THE_PODS_WORKLOAD). Without a Kubernetes API nothing can be checked: a node then takes over
  no address attached on another node (that container may still run: two pods with one address),
  and keeps allocating and taking what is retained or was its own, for the workload the request
  names, as before;
- whatever the API says, a node holds at most `max_allocations_per_node` addresses
  (`within_limit`, counted by the IP storage's node index): those attached to its containers,
  and the fixed ones retained since their last container there, until another node takes one
  over (its count moves there) or it is released (ReleaseWorkload, the workload watcher).
  Beyond, Allocate is RESOURCE_EXHAUSTED with ErrorInfo NODE_ALLOCATION_LIMIT, so even a node
  whose pods are real cannot take a whole shared pool, nor, without an API to say its pods are
  real, pile up retained addresses of made-up pods named with a fixed release policy. Taking
  back one of its own (attached or retained there) adds nothing and is never refused.
  tke.internal.ipamd.ipam serializes one node's new allocations in each replica, so the cap is
  exact with one replica and overshot by at most one address per other replica.
Anything else is authorization's (TCP) or the socket mode's business.

Invariants: the rule only takes rights away, never grants any. A refused call changes nothing:
a Release's node is checked on the version of the allocation the release then writes compared
(tke.internal.ipamd.ipam), so an allocation that moved to another node in between fails the
compare and is checked again; a refusal is PERMISSION_DENIED with ErrorInfo NODE_RESTRICTED
(NOT_THE_PODS_WORKLOAD for a workload that is not the pod's); the cap's is RESOURCE_EXHAUSTED
with ErrorInfo NODE_ALLOCATION_LIMIT.
A pod's placement is checked before anything is written or bound (the storage's compare then
guards the allocation itself); a pod deleted and bound elsewhere in the milliseconds between the
API's answer and the write is the one race left, as in Kubernetes, whose NodeRestriction checks
at admission too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tke.internal.auth.identity import Identity
from tke.internal.ipamd import errors
from tke.internal.ipamd.workloads import PodPlacement, PodsUnknown, ResolverUnavailable, Workload, WorkloadResolver
from tke.internal.rpc.errors import ApiError, unavailable
from tke.ipam.v1 import ipam_pb2

BOUND = "a node takes addresses only for pods bound to it"
OWN = "a node takes a workload's fixed addresses only for that workload's own pods"
OWN_ANY = "a node takes a workload's addresses only for that workload's own pods"
# Addresses a node may hold by default (max_allocations_per_node): kubelet runs at most 110 pods
# by default, with one or two interfaces each.
MAX_ALLOCATIONS_PER_NODE = 256
# A node name as ipamd accepts one (Kubernetes' are DNS-1123 subdomains, within this).
NODE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class NodeCaller:
    """A caller restricted to `node`; `who` names it in messages."""

    node: str
    who: str
    # A node identity over TCP: ReleaseWorkload refused, ListAllocations of its node only.
    identity: bool

    def _denied(self, message: str, other: str = "") -> ApiError:
        return errors.node_restricted(
            self.who, self.node, f"{self.who} acts on node {self.node!r} only: {message}", other
        )

    def _mine(self, node: str) -> bool:
        # An empty node is no node's: a node identity without a name (`system:node:`) reaches
        # nothing, and an empty node in a request ("every node" to ListAllocations) is refused.
        return bool(node) and node == self.node

    def require_node(self, node: str, call: str) -> None:
        """`call` names `node`: refused unless it is the caller's."""
        if not self._mine(node):
            raise self._denied(f"{call} names node {node!r}" if node else f"{call} names no node", node)

    def admit(self, a: ipam_pb2.Allocation) -> None:
        """An allocation the caller reaches (to release or read it): refused unless recorded on
        the caller's node."""
        if not self._mine(a.node):
            what = f"container {a.container_id} interface {a.ifname}" if a.container_id else f"{a.pool}/{a.ip}"
            raise self._denied(f"the address of {what} is node {a.node!r}'s", a.node)

    def within_limit(self, held: int, limit: int) -> None:
        """The caller's node holds `held` addresses (attached, or retained there) and is about to
        get one more: refused at `limit` (max_allocations_per_node)."""
        if held >= limit:
            raise errors.node_allocation_limit(
                self.who,
                self.node,
                held,
                limit,
                f"node {self.node!r} holds {held} addresses, its limit (max_allocations_per_node = {limit}), "
                "counting the fixed addresses retained since their last container there: release some first "
                "(a retained one with ReleaseWorkload), or raise max_allocations_per_node",
            )

    async def admit_pod(
        self,
        resolver: WorkloadResolver,
        owner: ipam_pb2.Owner,
        held: ipam_pb2.Allocation | None,
        *,
        fixed: bool = True,
    ) -> PodPlacement | None:
        """The caller gives an address to `owner`'s new container on its node: `held`, the
        fixed allocation it takes over, or a new one (None; `fixed`: of a fixed release policy).
        Refused unless the API, read now, says the pod is bound to the caller's node (and has the
        request's uid); without an API, refused only for an address attached on another node.
        Returns what the API said, None without an API; UNAVAILABLE when the API cannot answer.
        Then `admit_workload` checks the owner against it: keep it for the rest of the call (the
        pod is read once, its workload checked against every owner an attempt settles on)."""
        return await self._placement(
            resolver, owner, held, f"pod {owner.namespace}/{owner.pod_name}", _what(owner, held, fixed)
        )

    def admit_workload(
        self, owner: ipam_pb2.Owner, held: ipam_pb2.Allocation | None, placement: PodPlacement, *, fixed: bool = True
    ) -> None:
        """`owner` is the owner the address is for (its workload as the request named it or
        ipamd resolved it): refused unless `placement` (admit_pod's) says the pod belongs to it."""
        named = Workload(owner.namespace, owner.workload_kind, owner.workload_name)
        if (named.kind, named.name) != (placement.workload.kind, placement.workload.name):
            pod = f"pod {owner.namespace}/{owner.pod_name}"
            raise errors.not_pods_workload(
                self.who,
                self.node,
                f"{self.who} acts on node {self.node!r} only: {_what(owner, held, fixed)} as {_named(named)}: the "
                f"Kubernetes API says {pod} belongs to {placement.workload}; "
                f"{OWN if fixed or held is not None else OWN_ANY}",
                pod=f"{owner.namespace}/{owner.pod_name}",
                named=_named(named),
                actual=str(placement.workload),
            )

    async def _placement(
        self,
        resolver: WorkloadResolver,
        owner: ipam_pb2.Owner,
        held: ipam_pb2.Allocation | None,
        pod: str,
        what: str,
    ) -> PodPlacement | None:
        """The pod as the API says now, if it is bound to the caller's node (with the request's
        uid); None without an API, when that is allowed."""
        try:
            placement = await resolver.placement_of(owner.namespace, owner.pod_name)
        except PodsUnknown:
            if held is not None and held.state == ipam_pb2.ALLOCATION_STATE_ATTACHED and not self._mine(held.node):
                raise self._denied(
                    f"{what}: that container may still run; this tke-ipamd has no Kubernetes "
                    f"API to check that {pod} is bound to node {self.node!r}: configure [kubernetes], or have an "
                    "operator (not a node) allocate it",
                    held.node,
                ) from None
            return None
        except ResolverUnavailable as err:
            raise unavailable(f"cannot check where {pod} is bound: {err}") from None
        if placement is None:
            raise self._denied(f"{what}: the Kubernetes API has no {pod}; {BOUND}")
        if owner.pod_uid and owner.pod_uid != placement.uid:
            raise self._denied(
                f"{what}: the request's pod uid {owner.pod_uid} is not {pod}'s (the Kubernetes API says uid "
                f"{placement.uid}): a pod that is gone",
                placement.node,
            )
        if not self._mine(placement.node):
            bound = f"is bound to node {placement.node!r}" if placement.node else "is not bound to a node yet"
            raise self._denied(
                f"{what}: the Kubernetes API says {pod} {bound}; {BOUND}",
                placement.node,
            )
        return placement

    def refuse_workload_release(self) -> None:
        if self.identity:
            raise self._denied(
                "ReleaseWorkload acts on a workload's addresses on every node (the workload watcher's and "
                "operators' call; a node releases its own containers' addresses with Release and GarbageCollect)"
            )

    def require_listed_node(self, node: str) -> None:
        if self.identity:
            self.require_node(node, "ListAllocations")


def _what(owner: ipam_pb2.Owner, held: ipam_pb2.Allocation | None, fixed: bool) -> str:
    """The Allocate a refusal names."""
    pod = f"pod {owner.namespace}/{owner.pod_name}"
    if held is None:
        return f"Allocate of a fixed address for {pod}" if fixed else f"Allocate of an address for {pod}"
    where = f"container {held.container_id[:12]}" if held.container_id else "retained, last"
    return f"Allocate of {pod}'s fixed address {held.ip} ({where} on node {held.node!r})"


def _named(w: Workload) -> str:
    """A workload as a request names it (the kind may be missing)."""
    return str(w) if w.kind else f"workload {w.namespace}/{w.name} (no kind)"


def of_identity(identity: Identity) -> NodeCaller | None:
    """The restriction of a TCP caller: its node if it is one."""
    node = identity.node
    if node is None:
        return None
    return NodeCaller(node, f"node identity {identity.user!r}", identity=True)


def of_socket(node_name: str) -> NodeCaller | None:
    """The restriction of the unix socket's callers: the daemon's node, if it knows it."""
    if not node_name:
        return None
    return NodeCaller(node_name, f"the unix socket of the tke-ipamd of node {node_name!r}", identity=False)
