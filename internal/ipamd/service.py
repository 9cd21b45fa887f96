"""The tke.ipam.v1.IPAMService servicer: checks each request field by field (INVALID_ARGUMENT
with a BadRequest naming every bad field), applies the node rule to a caller that speaks for a
node (tke.internal.ipamd.noderule: the listener says who that is), then calls the IPAM core.
Errors are ApiError; the request interceptor turns them, and anything unexpected, into statuses
without tracebacks.

ListAllocations' page tokens are sealed for the request they continue (its filters and page
size; tke.internal.meta.pagetoken) and hold a position that is checked to lie in the listing:
any other token is INVALID_ARGUMENT. The seal's key is the same in every ipamd, so a listing
may go on at another replica; it is not a secret, and need not be: a token only names where a
listing the caller may read anyway goes on."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

import grpc

from tke.internal.ipamd.bindings import KIND, NAME, validate_binding, validate_workload
from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.noderule import NODE, NodeCaller
from tke.internal.meta.pagetoken import PageTokens, TokenError
from tke.internal.rpc.errors import FieldViolation, invalid, invalid_field, not_found
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

SERVICE_NAME = ipam_pb2.DESCRIPTOR.services_by_name["IPAMService"].full_name

# CNI's rules: a container id is alphanumerics, '_', '.', '-'; an interface name at most 15
# characters without '/' or whitespace.
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}$")
_IFNAME = re.compile(r"^[^/\s:]{1,15}$")
_UID = re.compile(r"^[A-Za-z0-9\-_.]{0,128}$")
DEFAULT_PAGE, MAX_PAGE = 500, 5000
# A position in a listing of allocations: "<pool>/<address as 8 hex digits>".
_CURSOR = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)/[0-9a-f]{8}$")
_PAGE_TOKENS = PageTokens(b"tke-ipamd ListAllocations page token")
DEFAULT_GC_MIN_AGE = 60


def _is_ip(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _attachment(container_id: str, ifname: str, field: str) -> list[FieldViolation]:
    v = []
    if not _CONTAINER_ID.fullmatch(container_id):
        v.append(FieldViolation(f"{field}container_id", "required; letters, digits, '_', '.' and '-'"))
    if not _IFNAME.fullmatch(ifname) or ifname in (".", ".."):
        v.append(FieldViolation(f"{field}ifname", "required; an interface name of at most 15 characters"))
    return v


def _owner(o: ipam_pb2.Owner, field: str) -> list[FieldViolation]:
    v = []
    if not NAME.fullmatch(o.namespace):
        v.append(FieldViolation(f"{field}.namespace", "required; a DNS-1123 name"))
    if not NAME.fullmatch(o.pod_name):
        v.append(FieldViolation(f"{field}.pod_name", "required; a DNS-1123 name"))
    if not _UID.fullmatch(o.pod_uid):
        v.append(FieldViolation(f"{field}.pod_uid", "a Kubernetes uid"))
    if o.workload_kind and not KIND.fullmatch(o.workload_kind):
        v.append(FieldViolation(f"{field}.workload_kind", "a Kubernetes kind such as StatefulSet"))
    if o.workload_name and not NAME.fullmatch(o.workload_name):
        v.append(FieldViolation(f"{field}.workload_name", "a DNS-1123 name"))
    if bool(o.workload_kind) != bool(o.workload_name) and o.workload_kind:
        v.append(FieldViolation(f"{field}.workload_name", "required with workload_kind"))
    return v


def _check(violations: list[FieldViolation]) -> None:
    if violations:
        raise invalid(violations)


def _page_size(n: int) -> int:
    if n < 0 or n > MAX_PAGE:
        raise invalid_field("page_size", f"must be between 0 and {MAX_PAGE}")
    return n or DEFAULT_PAGE


def _cursor(bound: bytes, token: str, pool: str) -> str:
    """The position a ListAllocations page token holds, if it is one issued for this query."""
    bad = invalid_field(
        "page_token", "is not a page token of this listing (the same filters and page size); pass next_page_token"
    )
    try:
        cursor = _PAGE_TOKENS.open(bound, token).get("a")
    except TokenError:
        raise bad from None
    match = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None or (pool and match.group(1) != pool):
        raise bad
    return str(cursor)


def _unrestricted() -> NodeCaller | None:
    return None


class IPAMServicer(ipam_pb2_grpc.IPAMServiceServicer):
    """`node_caller` says, during a call, which node its caller is restricted to (None: none);
    each listener has its own servicer with its own answer."""

    def __init__(self, ipam: IPAM, node_caller: Callable[[], NodeCaller | None] = _unrestricted) -> None:
        self.ipam = ipam
        self.node_caller = node_caller

    # -- pools --------------------------------------------------------------------------------
    async def CreatePool(
        self,
        request: ipam_pb2.CreatePoolRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.CreatePoolRequest, ipam_pb2.Pool],
    ) -> ipam_pb2.Pool:
        return await self.ipam.create_pool(request.pool)

    async def GetPool(
        self,
        request: ipam_pb2.GetPoolRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.GetPoolRequest, ipam_pb2.Pool],
    ) -> ipam_pb2.Pool:
        _check([] if NAME.fullmatch(request.name) else [FieldViolation("name", "required; a pool name")])
        return await self.ipam.get_pool(request.name)

    async def ListPools(
        self,
        request: ipam_pb2.ListPoolsRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.ListPoolsRequest, ipam_pb2.ListPoolsResponse],
    ) -> ipam_pb2.ListPoolsResponse:
        return ipam_pb2.ListPoolsResponse(pools=await self.ipam.list_pools())

    async def UpdatePool(
        self,
        request: ipam_pb2.UpdatePoolRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.UpdatePoolRequest, ipam_pb2.Pool],
    ) -> ipam_pb2.Pool:
        _check([] if NAME.fullmatch(request.pool.name) else [FieldViolation("pool.name", "required; a pool name")])
        return await self.ipam.update_pool(request.pool, list(request.update_mask.paths))

    async def DeletePool(
        self,
        request: ipam_pb2.DeletePoolRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.DeletePoolRequest, ipam_pb2.DeletePoolResponse],
    ) -> ipam_pb2.DeletePoolResponse:
        _check([] if NAME.fullmatch(request.name) else [FieldViolation("name", "required; a pool name")])
        await self.ipam.delete_pool(request.name)
        return ipam_pb2.DeletePoolResponse()

    # -- bindings -----------------------------------------------------------------------------
    async def PutBinding(
        self,
        request: ipam_pb2.PutBindingRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.PutBindingRequest, ipam_pb2.Binding],
    ) -> ipam_pb2.Binding:
        _check(validate_binding(request.binding))
        return await self.ipam.put_binding(request.binding)

    async def GetBinding(
        self,
        request: ipam_pb2.GetBindingRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.GetBindingRequest, ipam_pb2.Binding],
    ) -> ipam_pb2.Binding:
        _check(validate_workload(request.workload, "workload"))
        return await self.ipam.get_binding(request.workload)

    async def LookupBinding(
        self,
        request: ipam_pb2.LookupBindingRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.LookupBindingRequest, ipam_pb2.Binding],
    ) -> ipam_pb2.Binding:
        v = []
        if not NAME.fullmatch(request.namespace):
            v.append(FieldViolation("namespace", "required; a DNS-1123 name"))
        if not NAME.fullmatch(request.pod_name):
            v.append(FieldViolation("pod_name", "required; a DNS-1123 name"))
        if request.workload_kind and not KIND.fullmatch(request.workload_kind):
            v.append(FieldViolation("workload_kind", "a Kubernetes kind such as StatefulSet"))
        if request.workload_name and not NAME.fullmatch(request.workload_name):
            v.append(FieldViolation("workload_name", "a DNS-1123 name"))
        _check(v)
        found = await self.ipam.lookup_binding(
            request.namespace, request.pod_name, request.workload_kind, request.workload_name
        )
        if found is None:
            raise not_found("binding", f"pod/{request.pod_name}", request.namespace)
        return found

    async def ResolveWorkload(
        self,
        request: ipam_pb2.ResolveWorkloadRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.ResolveWorkloadRequest, ipam_pb2.WorkloadRef],
    ) -> ipam_pb2.WorkloadRef:
        v = []
        if not NAME.fullmatch(request.namespace):
            v.append(FieldViolation("namespace", "required; a DNS-1123 name"))
        if not NAME.fullmatch(request.pod_name):
            v.append(FieldViolation("pod_name", "required; a DNS-1123 name"))
        _check(v)
        w = await self.ipam.resolve(request.namespace, request.pod_name)
        return ipam_pb2.WorkloadRef(namespace=w.namespace, kind=w.kind, name=w.name)

    async def ListBindings(
        self,
        request: ipam_pb2.ListBindingsRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.ListBindingsRequest, ipam_pb2.ListBindingsResponse],
    ) -> ipam_pb2.ListBindingsResponse:
        if request.namespace and not NAME.fullmatch(request.namespace):
            raise invalid_field("namespace", "a DNS-1123 name")
        return ipam_pb2.ListBindingsResponse(bindings=await self.ipam.storage.list_bindings(request.namespace))

    async def DeleteBinding(
        self,
        request: ipam_pb2.DeleteBindingRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.DeleteBindingRequest, ipam_pb2.DeleteBindingResponse],
    ) -> ipam_pb2.DeleteBindingResponse:
        _check(validate_workload(request.workload, "workload"))
        await self.ipam.delete_binding(request.workload)
        return ipam_pb2.DeleteBindingResponse()

    # -- allocations --------------------------------------------------------------------------
    async def Allocate(
        self,
        request: ipam_pb2.AllocateRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.AllocateRequest, ipam_pb2.AllocateResponse],
    ) -> ipam_pb2.AllocateResponse:
        v = _owner(request.owner, "owner") + _attachment(request.container_id, request.ifname, "")
        if not NODE.fullmatch(request.node):
            v.append(FieldViolation("node", "required; a node name"))
        if request.node_ip and not _is_ip(request.node_ip):
            v.append(FieldViolation("node_ip", "an IPv4 address"))
        if request.pool and not NAME.fullmatch(request.pool):
            v.append(FieldViolation("pool", "a pool name"))
        if request.ip and not _is_ip(request.ip):
            v.append(FieldViolation("ip", "an IPv4 address"))
        if request.release_policy not in ipam_pb2.ReleasePolicy.values():
            v.append(FieldViolation("release_policy", "unknown release policy"))
        _check(v)
        caller = self.node_caller()
        if caller:
            caller.require_node(request.node, "Allocate")
        result = await self.ipam.allocate(request, node=caller)
        if caller:
            # A repeated Allocate returns the interface's address as it is, written nowhere: one
            # recorded on another node (its container id and owner named here) is not this node's.
            caller.admit(result.allocation)
        return ipam_pb2.AllocateResponse(allocation=result.allocation, reused=result.reused)

    async def Release(
        self,
        request: ipam_pb2.ReleaseRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.ReleaseRequest, ipam_pb2.ReleaseResponse],
    ) -> ipam_pb2.ReleaseResponse:
        v = _attachment(request.container_id, request.ifname, "")
        if not _UID.fullmatch(request.pod_uid):
            v.append(FieldViolation("pod_uid", "a Kubernetes uid"))
        _check(v)
        caller = self.node_caller()
        result = await self.ipam.release(
            request.container_id, request.ifname, request.pod_uid, admit=caller.admit if caller else None
        )
        return ipam_pb2.ReleaseResponse(found=result.found, retained=result.retained, allocation=result.allocation)

    async def ReleaseWorkload(
        self,
        request: ipam_pb2.ReleaseWorkloadRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.ReleaseWorkloadRequest, ipam_pb2.ReleaseWorkloadResponse],
    ) -> ipam_pb2.ReleaseWorkloadResponse:
        v = validate_workload(request.workload, "workload")
        replicas = request.replicas if request.HasField("replicas") else None
        if replicas is not None and replicas < 0:
            v.append(FieldViolation("replicas", "must not be negative"))
        if not request.deleted and replicas is None and not request.keep_pod_names:
            v.append(FieldViolation("deleted", "say what happened: deleted, replicas or keep_pod_names"))
        _check(v)
        if caller := self.node_caller():
            caller.refuse_workload_release()
        released, deferred = await self.ipam.release_workload(
            request.workload,
            deleted=request.deleted,
            replicas=replicas,
            keep=set(request.keep_pod_names),
            force=request.force,
        )
        return ipam_pb2.ReleaseWorkloadResponse(released=released, deferred=deferred)

    async def GetAllocation(
        self,
        request: ipam_pb2.GetAllocationRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.GetAllocationRequest, ipam_pb2.Allocation],
    ) -> ipam_pb2.Allocation:
        which = request.WhichOneof("by")
        if which == "attachment":
            att = request.attachment
            _check(_attachment(att.container_id, att.ifname, "attachment."))
            found = await self.ipam.get_by_attachment(att.container_id, att.ifname)
        elif which == "address":
            pool, _, ip = request.address.partition("/")
            if not NAME.fullmatch(pool) or not _is_ip(ip):
                raise invalid_field("address", 'must be "<pool>/<ip>", for example "net-a/10.0.1.17"')
            found = await self.ipam.get_by_address(pool, ip)
        elif which == "owner":
            _check(_owner(request.owner, "owner"))
            found = await self.ipam.get_by_owner(request.owner)
        else:
            raise invalid_field("by", "set one of attachment, address or owner")
        if caller := self.node_caller():
            caller.admit(found)
        return found

    async def ListAllocations(
        self,
        request: ipam_pb2.ListAllocationsRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.ListAllocationsRequest, ipam_pb2.ListAllocationsResponse],
    ) -> ipam_pb2.ListAllocationsResponse:
        size = _page_size(request.page_size)
        if caller := self.node_caller():
            caller.require_listed_node(request.node)
        query = ipam_pb2.ListAllocationsRequest()
        query.CopyFrom(request)
        query.ClearField("page_token")
        bound = query.SerializeToString(deterministic=True)
        if request.page_token:
            query.page_token = _cursor(bound, request.page_token, request.pool)
        items, cursor = await self.ipam.list_allocations(query, size)
        token = _PAGE_TOKENS.seal(bound, {"a": cursor}) if cursor else ""
        return ipam_pb2.ListAllocationsResponse(allocations=items, next_page_token=token)

    async def GarbageCollect(
        self,
        request: ipam_pb2.GarbageCollectRequest,
        context: grpc.aio.ServicerContext[ipam_pb2.GarbageCollectRequest, ipam_pb2.GarbageCollectResponse],
    ) -> ipam_pb2.GarbageCollectResponse:
        v = [] if NODE.fullmatch(request.node) else [FieldViolation("node", "required; a node name")]
        for i, att in enumerate(request.valid_attachments):
            v += _attachment(att.container_id, att.ifname, f"valid_attachments[{i}].")
        if request.min_age_seconds < 0:
            v.append(FieldViolation("min_age_seconds", "must not be negative"))
        _check(v)
        caller = self.node_caller()
        if caller:
            caller.require_node(request.node, "GarbageCollect")
        collected = await self.ipam.garbage_collect(
            request.node,
            {(a.container_id, a.ifname) for a in request.valid_attachments},
            dry_run=request.dry_run,
            min_age=float(request.min_age_seconds if request.HasField("min_age_seconds") else DEFAULT_GC_MIN_AGE),
            admit=caller.admit if caller else None,
        )
        return ipam_pb2.GarbageCollectResponse(collected=collected)
