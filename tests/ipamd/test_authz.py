"""ipamd's tenancy as authorization attributes (pure): which tenant owns a namespace, and what
each IPAM call asks the authorizers. tests/security/test_ipamd_auth.py runs it on a daemon."""

from __future__ import annotations

import pytest

from tke.internal.auth.identity import Identity
from tke.internal.ipamd.authz import NamespaceTenants, TenancyError, ipam_attributes
from tke.ipam.v1 import ipam_pb2

SERVICE = "/tke.ipam.v1.IPAMService/"


def test_a_namespace_belongs_to_at_most_one_tenant() -> None:
    tenants = NamespaceTenants({"team-a": ["shop", "shop-*"], "team-b": ["blog", "blog-*", "shop2"]})
    assert [tenants.tenant_of(n) for n in ("shop", "shop-web", "shop2", "blog-x", "kube-system", "")] == [
        "team-a",
        "team-a",
        "team-b",
        "team-b",
        "*",
        "*",
    ]
    for bad, says in (
        ({"a": ["x"], "b": ["x"]}, "given to a and b"),
        ({"a": ["x-*"], "b": ["x-y"]}, "matches x-*"),
        ({"a": ["x-*"], "b": ["x-y-*"]}, "overlaps x-*"),
        ({"a": ["*"], "b": ["y"]}, "matches *"),
        ({"a": ["Shop"]}, "neither a namespace name nor a prefix"),
        ({"a": ["x*y"]}, "neither a namespace name nor a prefix"),
        ({"Team": ["x"]}, "not a tenant name"),
    ):
        with pytest.raises(TenancyError, match=says):
            NamespaceTenants(bad)
    # One tenant may hold nested prefixes of its own.
    assert NamespaceTenants({"a": ["x-*", "x-y-*", "x-y-z"]}).tenant_of("x-y-z") == "a"


def test_every_ipam_call_names_its_tenant() -> None:
    attributes = ipam_attributes(NamespaceTenants({"team-a": ["shop"]}))
    alice = Identity(user="alice", tenant_id="team-a")
    workload = ipam_pb2.WorkloadRef(namespace="shop", kind="StatefulSet", name="db")
    owner = ipam_pb2.Owner(namespace="shop", pod_name="db-0")
    cases = [
        ("CreatePool", ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="p")), ("create", "pools", "p", "*")),
        ("UpdatePool", ipam_pb2.UpdatePoolRequest(pool=ipam_pb2.Pool(name="p")), ("update", "pools", "p", "*")),
        ("DeletePool", ipam_pb2.DeletePoolRequest(name="p"), ("delete", "pools", "p", "*")),
        ("GetPool", ipam_pb2.GetPoolRequest(name="p"), ("get", "pools", "p", "team-a")),
        ("ListPools", ipam_pb2.ListPoolsRequest(), ("list", "pools", "", "team-a")),
        (
            "PutBinding",
            ipam_pb2.PutBindingRequest(binding=ipam_pb2.Binding(workload=workload)),
            ("update", "bindings", "shop/StatefulSet/db", "team-a"),
        ),
        (
            "GetBinding",
            ipam_pb2.GetBindingRequest(workload=workload),
            ("get", "bindings", "shop/StatefulSet/db", "team-a"),
        ),
        (
            "LookupBinding",
            ipam_pb2.LookupBindingRequest(namespace="other", pod_name="x-0"),
            ("get", "bindings", "other/Pod/x-0", "*"),
        ),
        (
            "ResolveWorkload",
            ipam_pb2.ResolveWorkloadRequest(namespace="shop", pod_name="db-0"),
            ("get", "bindings", "shop/Pod/db-0", "team-a"),
        ),
        ("ListBindings", ipam_pb2.ListBindingsRequest(), ("list", "bindings", "", "*")),
        ("ListBindings", ipam_pb2.ListBindingsRequest(namespace="shop"), ("list", "bindings", "", "team-a")),
        (
            "DeleteBinding",
            ipam_pb2.DeleteBindingRequest(workload=workload),
            ("delete", "bindings", "shop/StatefulSet/db", "team-a"),
        ),
        ("Allocate", ipam_pb2.AllocateRequest(owner=owner), ("create", "allocations", "shop/db-0", "team-a")),
        ("Release", ipam_pb2.ReleaseRequest(container_id="c", ifname="eth0"), ("delete", "allocations", "c/eth0", "*")),
        (
            "ReleaseWorkload",
            ipam_pb2.ReleaseWorkloadRequest(workload=workload),
            ("delete", "allocations", "shop/StatefulSet/db", "team-a"),
        ),
        ("GetAllocation", ipam_pb2.GetAllocationRequest(owner=owner), ("get", "allocations", "shop/db-0", "team-a")),
        (
            "GetAllocation",
            ipam_pb2.GetAllocationRequest(address="p/10.0.0.2"),
            ("get", "allocations", "p/10.0.0.2", "*"),
        ),
        ("ListAllocations", ipam_pb2.ListAllocationsRequest(pool="p"), ("list", "allocations", "", "*")),
        ("GarbageCollect", ipam_pb2.GarbageCollectRequest(node="n1"), ("delete", "allocations", "node/n1", "*")),
    ]
    for method, request, expected in cases:
        got = attributes(SERVICE + method, request, alice)
        assert (got.verb, got.resource, got.name, got.tenant) == expected, method
    # Every RPC of the service has its rule (a new one would otherwise fall to the generic rules).
    service = ipam_pb2.DESCRIPTOR.services_by_name["IPAMService"]
    assert {m.name for m in service.methods} == {method for method, _, _ in cases}
    # Other services keep the generic rules (reflection, health).
    other = attributes("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None, alice)
    assert other.tenant == "team-a"


def test_a_node_is_a_system_node_user_in_the_system_nodes_group() -> None:
    """Kubernetes' convention, both parts required; being a node only restricts (noderule.py)."""
    assert Identity(user="system:node:n1", groups=("system:nodes",)).node == "n1"
    assert Identity(user="system:node:n1").node is None  # the name alone is not a node
    assert Identity(user="n1", groups=("system:nodes",)).node is None
    assert Identity(user="system:node:", groups=("system:nodes",)).node == ""  # a node no request can name
