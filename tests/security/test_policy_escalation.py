"""Rule: a caller creates, changes or deletes a role or role binding only if the object grants
nothing the caller does not hold, before and after the change (Kubernetes RBAC's escalation
prevention). All-tenant bindings and bindings naming tke:platform-admins are therefore platform
administrators' alone, wherever they live; a change cannot move a binding out of its maker's
reach; a narrow role cannot bind itself a wider one."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from tests.security.platform import Platform, binding, role
from tests.support.apiserver import cluster
from tests.support.rpc import detail_of, expect_error
from tke.auth.v1 import policy_pb2
from tke.internal.auth.identity import PLATFORM_ADMINS
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode


def escalation(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    info: error_details_pb2.ErrorInfo = detail_of(err, error_details_pb2.ErrorInfo)
    assert info.reason == "PRIVILEGE_ESCALATION", info
    return info


def create(b: policy_pb2.RoleBinding) -> policy_pb2.CreateRoleBindingRequest:
    return policy_pb2.CreateRoleBindingRequest(role_binding=b)


def update(b: policy_pb2.RoleBinding, *paths: str) -> policy_pb2.UpdateRoleBindingRequest:
    return policy_pb2.UpdateRoleBindingRequest(role_binding=b, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))


async def test_all_tenant_and_platform_admin_bindings_are_the_platforms(platform: Platform) -> None:
    ann = await platform.member("ann", "team-a", "admin")
    for probe in (
        binding("everywhere", "team-a", "viewer", users=["ann"], all_tenants=True),
        binding("everywhere", "team-a", "admin", users=["ann"], all_tenants=True),
        binding("admins", "team-a", "admin", groups=[PLATFORM_ADMINS]),
    ):
        info = escalation(await expect_error(ann.policy.CreateRoleBinding(create(probe)), Code.PERMISSION_DENIED))
        assert info.metadata["tenant"] == "*"

    # Turning her own ordinary binding into an all-tenant one is the same grant.
    widened = binding("ann-admin", "team-a", "admin", users=["ann"], all_tenants=True)
    err = await expect_error(ann.policy.UpdateRoleBinding(update(widened, "spec.all_tenants")), Code.PERMISSION_DENIED)
    escalation(err)
    err = await expect_error(ann.policy.UpdateRoleBinding(update(widened)), Code.PERMISSION_DENIED)
    escalation(err)
    # Nor can she move it to a tenant she has no rights in: there is no such binding for her.
    moved = binding("ann-admin", "team-b", "admin", users=["ann"])
    await expect_error(ann.policy.UpdateRoleBinding(update(moved)), Code.NOT_FOUND)

    # An all-tenant binding that a platform administrator keeps in team-a is out of her hands.
    await platform.bind(binding("auditors", "team-a", "viewer", users=["ann"], all_tenants=True))
    hijack = binding("auditors", "team-a", "viewer", users=["ann", "mallory"], all_tenants=True)
    escalation(await expect_error(ann.policy.UpdateRoleBinding(update(hijack)), Code.PERMISSION_DENIED))
    relabel = binding("auditors", "team-a", "viewer", users=["ann"], all_tenants=True)
    relabel.metadata.labels["owner"] = "ann"
    err = await expect_error(ann.policy.UpdateRoleBinding(update(relabel, "metadata.labels")), Code.PERMISSION_DENIED)
    escalation(err)
    delete = policy_pb2.DeleteRoleBindingRequest(name="auditors", tenant_id="team-a")
    escalation(await expect_error(ann.policy.DeleteRoleBinding(delete), Code.PERMISSION_DENIED))

    stored = await platform.root.policy.ListRoleBindings(policy_pb2.ListRoleBindingsRequest(tenant_id="team-a"))
    assert {b.metadata.name: (b.spec.all_tenants, [s.name for s in b.spec.subjects]) for b in stored.items} == {
        "ann-admin": (False, ["ann"]),
        "auditors": (True, ["ann"]),
    }
    # What is hers to do: bindings of her tenant that grant what she holds.
    await ann.policy.CreateRoleBinding(create(binding("devs", "team-a", "editor", groups=["a-devs"])))
    await ann.policy.UpdateRoleBinding(update(binding("devs", "team-a", "viewer", groups=["a-devs"])))
    await ann.policy.DeleteRoleBinding(policy_pb2.DeleteRoleBindingRequest(name="devs", tenant_id="team-a"))
    # And the platform administrator's: all of the above.
    await platform.root.policy.UpdateRoleBinding(update(hijack))
    await platform.root.policy.DeleteRoleBinding(delete)


async def test_a_narrow_role_cannot_bind_or_write_itself_a_wider_one(platform: Platform) -> None:
    # lim may write roles and bindings of team-a, and read clusters: nothing more.
    binder = role("binder", "team-a", (["*"], ["roles", "rolebindings"]), (["get", "list"], ["clusters"]))
    await platform.root.policy.CreateRole(policy_pb2.CreateRoleRequest(role=binder))
    lim = await platform.member("lim", "team-a", "binder")
    wider = role("wider", "team-a", (["*"], ["clusters"]))
    await platform.root.policy.CreateRole(policy_pb2.CreateRoleRequest(role=wider))
    for probe in (
        binding("lim-admin", "team-a", "admin", users=["lim"]),
        binding("lim-viewer", "team-a", "viewer", users=["lim"]),  # get on everything: more than clusters
        binding("lim-wider", "team-a", "wider", users=["lim"]),
        binding("lim-later", "team-a", "not-yet-a-role", users=["lim"]),  # could become anything
    ):
        escalation(await expect_error(lim.policy.CreateRoleBinding(create(probe)), Code.PERMISSION_DENIED))
    # Nor write a role wider than herself, or widen the role she already has.
    own = role("mine", "team-a", (["*"], ["*"]))
    escalation(
        await expect_error(lim.policy.CreateRole(policy_pb2.CreateRoleRequest(role=own)), Code.PERMISSION_DENIED)
    )
    binder.spec.rules.add(verbs=["delete"], resources=["clusters"])
    err = await expect_error(lim.policy.UpdateRole(policy_pb2.UpdateRoleRequest(role=binder)), Code.PERMISSION_DENIED)
    escalation(err)
    keep = cluster("keep")
    keep.metadata.tenant_id = "team-a"
    await platform.root.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=keep))
    await expect_error(
        lim.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="keep", tenant_id="team-a")), Code.PERMISSION_DENIED
    )
    # Within what she holds she is free: a reader role, bound to a colleague.
    reader = role("reader", "team-a", (["get"], ["clusters"]))
    await lim.policy.CreateRole(policy_pb2.CreateRoleRequest(role=reader))
    await lim.policy.CreateRoleBinding(create(binding("bob-reader", "team-a", "reader", users=["bob"])))


async def test_a_tenants_role_bound_everywhere_is_the_platforms(platform: Platform) -> None:
    ann = await platform.member("ann", "team-a", "admin")
    shared = role("support", "team-a", (["get"], ["clusters"]))
    await ann.policy.CreateRole(policy_pb2.CreateRoleRequest(role=shared))
    await platform.bind(binding("support-everywhere", "team-a", "support", groups=["support"], all_tenants=True))
    shared.spec.rules.add(verbs=["*"], resources=["*"])
    err = await expect_error(ann.policy.UpdateRole(policy_pb2.UpdateRoleRequest(role=shared)), Code.PERMISSION_DENIED)
    assert escalation(err).metadata["tenant"] == "*"
    gone = policy_pb2.DeleteRoleRequest(name="support", tenant_id="team-a")
    escalation(await expect_error(ann.policy.DeleteRole(gone), Code.PERMISSION_DENIED))
    # A role of hers that nothing binds everywhere stays hers.
    await ann.policy.CreateRole(policy_pb2.CreateRoleRequest(role=role("local", "team-a", (["get"], ["clusters"]))))
    await ann.policy.DeleteRole(policy_pb2.DeleteRoleRequest(name="local", tenant_id="team-a"))
