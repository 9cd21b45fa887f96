"""Pools, bindings and allocations of tke-ipamd (tke.ipam.v1.IPAMService) as tkectl kinds.

They are not apiserver objects: no metadata, no tenant, no resource_version, no watch. A
binding is named "namespace/Kind/workload" (default/StatefulSet/web), an allocation
"pool/ip" (net-a/10.0.1.17). Pools cannot be changed once created (the service has no update);
allocations are read-only (CNI DEL, ReleaseWorkload and garbage collection free them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from google.protobuf.message import Message

from tke.internal.meta.labels import SelectorError, parse_selector
from tke.internal.tkectl.connection import IPAMD, Connection
from tke.internal.tkectl.errors import CliError, Exit, usage
from tke.internal.tkectl.kinds.base import Column, Kind, Query, age, enum_text, labels_text
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

PAGE_SIZE = 1000


class IpamKind(Kind):
    server = IPAMD
    tenanted = False
    apply_paths = ()

    def _stub(self, conn: Connection) -> Any:
        return ipam_pb2_grpc.IPAMServiceStub(conn.channel(self.server))

    def prepare(self, obj: Any, tenant: str) -> None:
        return None


def _no_selector(kind: Kind, query: Query) -> None:
    if query.selector:
        raise usage(f"{kind.plural} have no labels: -l/--selector does not apply")


class Pools(IpamKind):
    plural, singular, kind, aliases = "pools", "pool", "Pool", ("ippools",)
    message = ipam_pb2.Pool
    columns = (
        Column("NAME", lambda o: o.name),
        Column("CIDR", lambda o: o.cidr),
        Column("CAPACITY", lambda o: str(o.status.capacity)),
        Column("ALLOCATED", lambda o: str(o.status.allocated)),
        Column("COOLING", lambda o: str(o.status.cooling)),
        Column("PROVIDER", lambda o: o.provider.name or "static"),
        Column("AGE", lambda o: age(o.creation_timestamp)),
    )
    wide_columns = (
        Column("GATEWAY", lambda o: o.gateway),
        Column("VLAN", lambda o: str(o.vlan)),
        Column("NODE-SUBNETS", lambda o: ",".join(o.node_subnets) or "<all>"),
        Column("LABELS", lambda o: labels_text(o.labels)),
    )

    def name_of(self, obj: Any) -> str:
        return str(obj.name)

    async def get(self, conn: Connection, name: str, tenant: str) -> Message:
        result: Message = await self.call(conn, self._stub(conn).GetPool, ipam_pb2.GetPoolRequest(name=name))
        return result

    async def list(self, conn: Connection, query: Query) -> Sequence[Message]:
        try:
            selector = parse_selector(query.selector)
        except SelectorError as err:
            raise usage(f"invalid label selector: {err}") from None
        listed = await self.call(conn, self._stub(conn).ListPools, ipam_pb2.ListPoolsRequest())
        return [p for p in listed.pools if selector.matches(p.labels)]

    async def create(self, conn: Connection, obj: Message, extra: dict[str, Any]) -> Message:
        result: Message = await self.call(
            conn, self._stub(conn).CreatePool, ipam_pb2.CreatePoolRequest(pool=cast(ipam_pb2.Pool, obj))
        )
        return result

    async def delete(self, conn: Connection, name: str, tenant: str, resource_version: str) -> Message | None:
        await self.call(conn, self._stub(conn).DeletePool, ipam_pb2.DeletePoolRequest(name=name))
        return None

    def same(self, current: Any, desired: Any, paths: Sequence[str]) -> bool:
        # The daemon fills defaults (gateway, ranges, ...): compare what the file sets.
        return all(
            getattr(current, f.name) == value
            for f, value in desired.ListFields()
            if f.name not in ("creation_timestamp", "status")
        )

    async def update(self, conn: Connection, obj: Message, paths: Sequence[str]) -> Message:
        raise CliError(
            Exit.CONFLICT,
            "the pool exists with other settings, and tke-ipamd cannot change a pool: "
            "delete it (once it has no allocations) and create it again",
        )


def _workload(name: str) -> ipam_pb2.WorkloadRef:
    parts = name.split("/")
    if len(parts) != 3 or not all(parts):
        raise usage(f'a binding is named "namespace/Kind/workload", for example default/StatefulSet/web: not {name!r}')
    return ipam_pb2.WorkloadRef(namespace=parts[0], kind=parts[1], name=parts[2])


class Bindings(IpamKind):
    plural, singular, kind, aliases = "bindings", "binding", "Binding", ("ipbindings",)
    message = ipam_pb2.Binding
    editable = True
    filters = ("pod-namespace",)
    columns = (
        Column("NAMESPACE", lambda o: o.workload.namespace),
        Column("KIND", lambda o: o.workload.kind),
        Column("WORKLOAD", lambda o: o.workload.name),
        Column("NETWORK", lambda o: o.network or "<default>"),
        Column("POOL", lambda o: o.pool or "<any>"),
        Column("RELEASE", lambda o: enum_text(o, "release_policy", "RELEASE_POLICY_") or "POD_DELETE"),
    )
    wide_columns = (Column("UPDATED", lambda o: age(o.update_timestamp)),)

    def name_of(self, obj: Any) -> str:
        w = obj.workload
        return f"{w.namespace}/{w.kind}/{w.name}"

    async def get(self, conn: Connection, name: str, tenant: str) -> Message:
        request = ipam_pb2.GetBindingRequest(workload=_workload(name))
        result: Message = await self.call(conn, self._stub(conn).GetBinding, request)
        return result

    async def list(self, conn: Connection, query: Query) -> Sequence[Message]:
        _no_selector(self, query)
        request = ipam_pb2.ListBindingsRequest(namespace=query.filters.get("pod-namespace", ""))
        listed = await self.call(conn, self._stub(conn).ListBindings, request)
        return list(listed.bindings)

    async def create(self, conn: Connection, obj: Message, extra: dict[str, Any]) -> Message:
        # PutBinding creates or replaces: create refuses to replace, as for every other kind.
        try:
            await self.get(conn, self.name_of(obj), "")
        except CliError as err:
            if err.exit_code != Exit.NOT_FOUND:
                raise
            return await self.update(conn, obj, ())
        raise CliError(Exit.CONFLICT, f'ALREADY_EXISTS: binding "{self.name_of(obj)}" already exists', "ALREADY_EXISTS")

    async def update(self, conn: Connection, obj: Message, paths: Sequence[str]) -> Message:
        result: Message = await self.call(
            conn, self._stub(conn).PutBinding, ipam_pb2.PutBindingRequest(binding=cast(ipam_pb2.Binding, obj))
        )
        return result

    async def delete(self, conn: Connection, name: str, tenant: str, resource_version: str) -> Message | None:
        request = ipam_pb2.DeleteBindingRequest(workload=_workload(name))
        await self.call(conn, self._stub(conn).DeleteBinding, request)
        return None

    def same(self, current: Any, desired: Any, paths: Sequence[str]) -> bool:
        return bool(
            current.network == desired.network
            and current.pool == desired.pool
            and (current.release_policy or 1) == (desired.release_policy or 1)
        )


class Allocations(IpamKind):
    plural, singular, kind, aliases = "allocations", "allocation", "Allocation", ("ips",)
    message = ipam_pb2.Allocation
    filters = ("pool", "node", "pod-namespace", "workload", "pod")
    columns = (
        Column("POOL", lambda o: o.pool),
        Column("IP", lambda o: o.ip),
        Column("NAMESPACE", lambda o: o.owner.namespace),
        Column("POD", lambda o: o.owner.pod_name),
        Column("NODE", lambda o: o.node),
        Column("STATE", lambda o: enum_text(o, "state", "ALLOCATION_STATE_")),
        Column("RELEASE", lambda o: enum_text(o, "release_policy", "RELEASE_POLICY_") or "POD_DELETE"),
    )
    wide_columns = (
        Column("WORKLOAD", lambda o: f"{o.owner.workload_kind}/{o.owner.workload_name}".strip("/")),
        Column("CONTAINER", lambda o: o.container_id[:12]),
        Column("IFNAME", lambda o: o.ifname),
        Column("AGE", lambda o: age(o.allocate_timestamp)),
    )

    def name_of(self, obj: Any) -> str:
        return f"{obj.pool}/{obj.ip}"

    async def get(self, conn: Connection, name: str, tenant: str) -> Message:
        if name.count("/") != 1:
            raise usage(f'an allocation is named "pool/ip", for example net-a/10.0.1.17: not {name!r}')
        request = ipam_pb2.GetAllocationRequest(address=name)
        result: Message = await self.call(conn, self._stub(conn).GetAllocation, request)
        return result

    async def list(self, conn: Connection, query: Query) -> Sequence[Message]:
        _no_selector(self, query)
        f = query.filters
        out: list[Message] = []
        token = ""
        while True:
            request = ipam_pb2.ListAllocationsRequest(
                pool=f.get("pool", ""),
                node=f.get("node", ""),
                namespace=f.get("pod-namespace", ""),
                workload_name=f.get("workload", ""),
                pod_name=f.get("pod", ""),
                page_size=PAGE_SIZE,
                page_token=token,
            )
            page = await self.call(conn, self._stub(conn).ListAllocations, request)
            out += page.allocations
            token = page.next_page_token
            if not token:
                return out
