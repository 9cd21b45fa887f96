"""IPAM's errors for clients, with google.rpc details: exhausted pools, addresses owned by
someone else or cooling down, pools still in use, nodes or namespaces a pool does not serve, a
node's caller reaching for another node's addresses or another workload's, or beyond its
node's limit."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from tke.internal.rpc.errors import DOMAIN, ApiError, precondition, unavailable
from tke.ipam.v1 import ipam_pb2


def holder(a: ipam_pb2.Allocation) -> str:
    """Who has an address, for messages."""
    who = f"pod {a.owner.namespace}/{a.owner.pod_name}"
    return f"{who} (container {a.container_id[:12]})" if a.container_id else f"{who} (retained)"


def exhausted(pools: list[str]) -> ApiError:
    names = ", ".join(pools) or "(none)"
    info = error_details_pb2.ErrorInfo(reason="POOL_EXHAUSTED", domain=DOMAIN, metadata={"pools": names})
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"no free address in pool {names}", [info])


def address_in_use(pool: str, ip: str, holder: str) -> ApiError:
    return precondition(
        "ADDRESS_IN_USE",
        f"{pool}/{ip}",
        f"address {ip} of pool {pool} belongs to {holder}",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def address_cooling(pool: str, ip: str, seconds: float) -> ApiError:
    return precondition(
        "ADDRESS_COOLING_DOWN",
        f"{pool}/{ip}",
        f"address {ip} of pool {pool} was released recently; it is free again in {seconds:.0f}s",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def attachment_in_use(container_id: str, ifname: str, holder: str) -> ApiError:
    return precondition(
        "ATTACHMENT_IN_USE",
        f"{container_id}/{ifname}",
        f"container {container_id} interface {ifname} already has an address for {holder}",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def pool_in_use(pool: str) -> ApiError:
    return precondition(
        "POOL_IN_USE",
        f"pools/{pool}",
        f"pool {pool} still has allocations; release them first",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def pool_overlaps(pool: ipam_pb2.Pool, other: str, first: str, last: str) -> ApiError:
    """FAILED_PRECONDITION: the new pool would hand out addresses another pool hands out."""
    field = "pool.ranges" if pool.ranges else "pool.cidr"
    span = first if first == last else f"{first}-{last}"
    return precondition(
        "POOL_OVERLAP",
        f"pools/{other}",
        f"{field}: addresses {span} of pool {pool.name} are already handed out by pool {other}; "
        "pools never share an address (give them disjoint ranges)",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def pool_deleting(pool: str) -> ApiError:
    return precondition(
        "POOL_DELETING", f"pools/{pool}", f"pool {pool} is being deleted", grpc.StatusCode.FAILED_PRECONDITION
    )


def is_pool_gone(err: ApiError) -> bool:
    """The pool was deleted, or is being deleted, while a request was using it."""
    if err.code == grpc.StatusCode.NOT_FOUND:
        return True
    return any(
        isinstance(d, error_details_pb2.PreconditionFailure) and d.violations[0].type == "POOL_DELETING"
        for d in err.details
    )


def node_not_served(pool: str, node: str) -> ApiError:
    return precondition(
        "NODE_NOT_SERVED",
        f"pools/{pool}",
        f"pool {pool} does not serve node {node}",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def pool_not_allowed(pool: str, namespace: str) -> ApiError:
    """PERMISSION_DENIED: the pool's `namespaces` leave this namespace out."""
    info = error_details_pb2.ErrorInfo(
        reason="POOL_NOT_ALLOWED", domain=DOMAIN, metadata={"pool": pool, "namespace": namespace}
    )
    return ApiError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"pool {pool} does not hand out addresses to namespace {namespace} (see the pool's namespaces)",
        [info],
    )


def no_pool_for_node(node: str, namespace: str) -> ApiError:
    return precondition(
        "NO_POOL",
        f"nodes/{node}",
        f"no pool serves node {node} for namespace {namespace}",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def binding_pool_missing(pool: str) -> ApiError:
    return precondition(
        "NO_POOL",
        f"pools/{pool}",
        f"the workload's binding names pool {pool}, which does not exist",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def provider_refused(pool: str, detail: str) -> ApiError:
    return precondition("PROVIDER_REFUSED", f"pools/{pool}", detail, grpc.StatusCode.FAILED_PRECONDITION)


def provider_unavailable(pool: str) -> ApiError:
    return unavailable(f"the IP provider of pool {pool} did not answer; retry shortly")


def contention() -> ApiError:
    return ApiError(grpc.StatusCode.ABORTED, "too much contention on the pool; retry")


def node_restricted(caller: str, node: str, message: str, other: str = "") -> ApiError:
    """PERMISSION_DENIED: a caller restricted to `node` (tke.internal.ipamd.noderule) asked for
    something that is not that node's; `other` is the node it named, when it named one."""
    metadata = {"caller": caller, "node": node}
    if other:
        metadata["requested_node"] = other
    info = error_details_pb2.ErrorInfo(reason="NODE_RESTRICTED", domain=DOMAIN, metadata=metadata)
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, [info])


def not_pods_workload(caller: str, node: str, message: str, *, pod: str, named: str, actual: str) -> ApiError:
    """PERMISSION_DENIED: a caller restricted to `node` asked for a fixed address of workload
    `named` for a pod the Kubernetes API says is `actual`'s (tke.internal.ipamd.noderule)."""
    metadata = {"caller": caller, "node": node, "pod": pod, "workload": named, "pod_workload": actual}
    info = error_details_pb2.ErrorInfo(reason="NOT_THE_PODS_WORKLOAD", domain=DOMAIN, metadata=metadata)
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, [info])


def node_allocation_limit(caller: str, node: str, held: int, limit: int, message: str) -> ApiError:
    """RESOURCE_EXHAUSTED: a caller restricted to `node` holds `limit` addresses already
    (max_allocations_per_node, tke.internal.ipamd.noderule)."""
    metadata = {"caller": caller, "node": node, "held": str(held), "limit": str(limit)}
    info = error_details_pb2.ErrorInfo(reason="NODE_ALLOCATION_LIMIT", domain=DOMAIN, metadata=metadata)
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, [info])


def reason_of(err: ApiError) -> str:
    """The ErrorInfo reason of an error ("" without one)."""
    return next((d.reason for d in err.details if isinstance(d, error_details_pb2.ErrorInfo)), "")
