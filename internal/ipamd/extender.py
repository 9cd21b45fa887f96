"""The kube-scheduler extender (galaxy's): keeps a pod whose workload has a binding on the nodes
its pool serves, so that a fixed or subnet IP never lands on a node whose network cannot carry
it. Served over HTTP by tke-ipamd (`[extender] address`), on loopback: each control-plane
node's kube-scheduler calls the tke-ipamd of its own node.

The contract is kube-scheduler's (k8s.io/kube-scheduler/extender/v1): POST `<urlPrefix>/filter`
and `<urlPrefix>/prioritize` with an ExtenderArgs body, `{"Pod": Pod, "Nodes": NodeList,
"NodeNames": [...]}` (Go field names; Nodes when the extender is not node-cache capable, the
names otherwise); filter answers an ExtenderFilterResult, `{"Nodes" | "NodeNames", "FailedNodes",
"FailedAndUnresolvableNodes", "Error"}`, prioritize a HostPriorityList, `[{"Host", "Score"}]`
with scores from 0 to 10. Field names are read as Go reads them, case-insensitively.

Which nodes a pool serves: the pool's `node_names`, or `node_subnets` holding the node's
InternalIP (status.addresses), exactly as Allocate decides (tke.internal.ipamd.pools.serves).
The pod's pools: the pool of the fixed address its owner already holds (bound or not: a
network's release policy may have made it fixed), else its binding's pool, else every pool (a
binding without a pool, and a pod without a binding, take any pool serving the node). A new
address comes only from a pool whose `namespaces` take the pod's namespace, as Allocate decides
(tke.internal.ipamd.pools.admits, the one rule for both): the others are left out, except the
pool of an address the owner holds (what a namespace holds stays its). Nodes none of the pod's
pools serves are FailedAndUnresolvable (preempting pods cannot make a pool serve a node), with
the pools that serve one but not the namespace named. A pod on the host's network
(spec.hostNetwork) gets no address and is not constrained.

Bindings and pools are read at most every `refresh` seconds; when the IP storage cannot be read,
the last snapshot (at most `max_stale` seconds old) decides, so a storage outage does not stop
the cluster's scheduling. A pod's workload comes from its ownerReferences (a ReplicaSet's owner
through the API, cached). Anything that cannot be decided is an `Error` in the answer: the
scheduler tries the pod again later rather than place it blindly.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.kube_resolver import KubeResolver
from tke.internal.ipamd.pools import admits, pool_layout, serves
from tke.internal.ipamd.storage import StorageUnavailable, owner_key
from tke.internal.ipamd.workloads import (
    REPLICA_SET,
    STABLE_NAME_KINDS,
    Workload,
    controller_of,
    owner_refs_of_json,
    workload_of,
)
from tke.internal.provider.errors import StepError
from tke.internal.rpc.errors import ApiError
from tke.ipam.v1 import ipam_pb2

log = logging.getLogger("tke.ipamd.extender")

MAX_PRIORITY = 10  # extenderv1.MaxExtenderPriority


class BadArgs(Exception):
    """The request is not an ExtenderArgs."""


def field_of(obj: Mapping[str, Any], name: str) -> Any:
    """obj[name], matched as Go's encoding/json matches field names: exactly, else ignoring case."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == lowered), None)


@dataclass(frozen=True)
class NodeFacts:
    name: str
    internal_ip: str = ""


def node_facts(node: Any) -> NodeFacts:
    """A Node's name and InternalIP, from its JSON."""
    if not isinstance(node, dict):
        raise BadArgs("a node is not an object")
    meta = _object(node.get("metadata"))
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise BadArgs("a node has no metadata.name")
    addresses = _object(node.get("status")).get("addresses")
    if not isinstance(addresses, list):
        addresses = []
    ip = next(
        (str(a.get("address")) for a in addresses if isinstance(a, dict) and a.get("type") == "InternalIP"),
        "",
    )
    return NodeFacts(name, ip if _ipv4(ip) else "")


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Candidates:
    """The pools a pod's address may come from, and those left out because their `namespaces`
    do not take the pod's namespace."""

    namespace: str
    pools: list[ipam_pb2.Pool]
    refused: list[ipam_pb2.Pool] = field(default_factory=list)

    @classmethod
    def new_address(cls, namespace: str, pools: list[ipam_pb2.Pool]) -> Candidates:
        """Of `pools`, those a new address of the namespace may come from (as Allocate decides)."""
        return cls(
            namespace, [p for p in pools if admits(p, namespace)], [p for p in pools if not admits(p, namespace)]
        )


def not_served(candidates: Candidates, node: NodeFacts) -> str | None:
    """Why no pool of the pod's serves the node, None when one does."""
    if any(serves(p, node.name, node.internal_ip) for p in candidates.pools):
        return None
    where = f" (InternalIP {node.internal_ip})" if node.internal_ip else " (no InternalIP)"
    not_theirs = f"does not hand out addresses to namespace {candidates.namespace} (see the pool's namespaces)"
    refusing = ", ".join(p.name for p in candidates.refused if serves(p, node.name, node.internal_ip))
    if refusing:
        return f"pool {refusing} serves node {node.name}{where} but {not_theirs}"
    if not candidates.pools and candidates.refused:
        return f"pool {', '.join(p.name for p in candidates.refused)} {not_theirs}"
    names = ", ".join(p.name for p in candidates.pools) or "(none)"
    return f"pool {names} does not serve node {node.name}{where}"


@dataclass
class Snapshot:
    bindings: dict[tuple[str, str, str], ipam_pb2.Binding] = field(default_factory=dict)
    pools: dict[str, ipam_pb2.Pool] = field(default_factory=dict)  # not being deleted
    free: dict[str, float] = field(default_factory=dict)  # pool -> share of free addresses
    taken: float = float("-inf")


class Extender:
    def __init__(
        self,
        ipam: IPAM,
        resolver: KubeResolver,
        *,
        refresh: float = 5.0,
        max_stale: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ipam = ipam
        self.resolver = resolver
        self.refresh, self.max_stale, self.clock = refresh, max_stale, clock
        self._snapshot = Snapshot()

    # -- the IPAM state -------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        now = self.clock()
        if now - self._snapshot.taken < self.refresh:
            return self._snapshot
        try:
            bindings = await self.ipam.storage.list_bindings()
            entries = await self.ipam.storage.list_pools()
            free = {}
            for e in entries:
                capacity = pool_layout(e.pool).size
                used = sum(b.count() for b in await self.ipam.storage.blocks(e.pool.name))
                free[e.pool.name] = (capacity - used) / capacity if capacity else 0.0
        except StorageUnavailable as err:
            if now - self._snapshot.taken <= self.max_stale:
                log.warning("extender: the IP storage is unreachable (%s); deciding with the last snapshot", err)
                return self._snapshot
            raise
        self._snapshot = Snapshot(
            bindings={(b.workload.namespace, b.workload.kind, b.workload.name): b for b in bindings},
            pools={e.pool.name: e.pool for e in entries if not e.deleting},
            free=free,
            taken=now,
        )
        return self._snapshot

    async def pools_for(self, pod: Any) -> Candidates | None:
        """The pools the pod's address may come from; None when the pod is not constrained."""
        if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
            raise BadArgs("Pod has no metadata")
        meta = pod["metadata"]
        namespace, name = str(meta.get("namespace") or "default"), meta.get("name")
        if not isinstance(name, str) or not name:
            raise BadArgs("Pod has no metadata.name")
        if _object(pod.get("spec")).get("hostNetwork") is True:
            return None  # no CNI ADD, no address
        refs = owner_refs_of_json(meta)
        ref = controller_of(refs)
        parent = (
            await self.resolver.replica_set_controller(namespace, ref.name) if ref and ref.kind == REPLICA_SET else None
        )
        w = workload_of(namespace, name, refs, lambda _: parent)
        snap = await self.snapshot()
        held = await self._held_pool(w, name)
        if held:
            # An address the owner holds stays its, whatever the pool's namespaces say now (with
            # a binding, or a network whose release policy made it fixed).
            return Candidates(namespace, [snap.pools[held]] if held in snap.pools else [])
        binding = snap.bindings.get((w.namespace, w.kind, w.name))
        if binding is not None and binding.pool:
            return Candidates.new_address(namespace, [snap.pools[binding.pool]] if binding.pool in snap.pools else [])
        # A binding without a pool, or none (the pod's network takes any pool): the pools
        # Allocate chooses by node.
        return Candidates.new_address(namespace, list(snap.pools.values()))

    async def _held_pool(self, w: Workload, pod_name: str) -> str:
        """The pool of the fixed address the pod's owner holds (StatefulSet and bare pods)."""
        if w.kind not in STABLE_NAME_KINDS:
            return ""
        try:
            held = await self.ipam.storage.by_owner(owner_key(w.namespace, w.kind, w.name, pod_name))
        except StorageUnavailable:
            return ""  # the binding's pool decides meanwhile
        return held.allocation.pool if held is not None else ""

    # -- the verbs ------------------------------------------------------------------------------

    async def _nodes(self, args: Mapping[str, Any]) -> tuple[list[Any] | None, list[NodeFacts]]:
        """(the Node objects when given in full, else None; the facts of every node)."""
        nodes = field_of(args, "Nodes")
        if isinstance(nodes, dict):
            items = field_of(nodes, "items") or []
            if not isinstance(items, list):
                raise BadArgs("Nodes.items is not a list")
            return items, [node_facts(n) for n in items]
        names = field_of(args, "NodeNames")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadArgs("neither Nodes nor NodeNames is given")
        facts = []
        for n in names:
            node = await self.resolver.api.node(n)
            facts.append(node_facts(node.to_dict()) if node is not None else NodeFacts(n))  # type: ignore[no-untyped-call]
        return None, facts

    async def filter(self, args: Mapping[str, Any]) -> dict[str, Any]:
        items, facts = await self._nodes(args)
        candidates = await self.pools_for(field_of(args, "Pod"))
        failed: dict[str, str] = {}
        if candidates is not None:
            for node in facts:
                why = not_served(candidates, node)
                if why is not None:
                    failed[node.name] = why
        out: dict[str, Any] = {"FailedNodes": {}, "FailedAndUnresolvableNodes": failed, "Error": ""}
        if items is not None:
            kept = [n for n, f in zip(items, facts, strict=True) if f.name not in failed]
            out.update(Nodes={"metadata": {}, "items": kept}, NodeNames=None)
        else:
            out.update(Nodes=None, NodeNames=[f.name for f in facts if f.name not in failed])
        return out

    async def prioritize(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Nodes whose pool has more free addresses first; 0 for all when the pod is not
        constrained."""
        _, facts = await self._nodes(args)
        candidates = await self.pools_for(field_of(args, "Pod"))
        pools = candidates.pools if candidates is not None else []
        snap = self._snapshot
        out = []
        for node in facts:
            share = max((snap.free.get(p.name, 0.0) for p in pools if serves(p, node.name, node.internal_ip)),
                        default=0.0)  # fmt: skip
            out.append({"Host": node.name, "Score": round(MAX_PRIORITY * share)})
        return out

    # -- HTTP -----------------------------------------------------------------------------------

    def app(self, max_body_bytes: int) -> web.Application:
        app = web.Application(client_max_size=max_body_bytes)
        app.router.add_post("/filter", self._serve(self.filter, failed_filter))
        app.router.add_post("/prioritize", self._serve(self.prioritize, lambda _: []))
        app.router.add_get("/healthz", healthz)
        return app

    def _serve(self, verb: Callable[[Mapping[str, Any]], Any], on_error: Callable[[str], Any]) -> Any:
        async def handle(request: web.Request) -> web.Response:
            try:
                args = json.loads(await request.read())
            except (ValueError, UnicodeDecodeError):
                return web.json_response({"Error": "the body is not JSON"}, status=400)
            if not isinstance(args, dict):
                return web.json_response({"Error": "the body is not an ExtenderArgs object"}, status=400)
            try:
                return web.json_response(await verb(args))
            except BadArgs as err:
                return web.json_response(on_error(f"bad ExtenderArgs: {err}"))
            except (StepError, StorageUnavailable, ApiError) as err:
                message = err.message if isinstance(err, ApiError) else str(err)
                log.warning("extender %s: %s", request.path, message)
                return web.json_response(on_error(f"tke-ipamd cannot decide now: {message}"))

        return handle


def failed_filter(message: str) -> dict[str, Any]:
    return {"Nodes": None, "NodeNames": None, "FailedNodes": {}, "FailedAndUnresolvableNodes": {}, "Error": message}


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")
