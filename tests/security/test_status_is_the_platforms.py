"""Rule: status is the platform's record of what it built (phase, conditions, endpoints,
control-plane members, cloud resources, provider ids), written only by the controller and
platform administrators, as Kubernetes grants the status subresource to controllers. No built-in
tenant role holds `update-status`, so a tenant admin or editor cannot forge the status of its own
cluster or machine, nor write itself a role or binding that gives it (escalation prevention)."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from tests.security.platform import Client, Platform, binding, role
from tests.support.apiserver import cluster, machine
from tests.support.rpc import expect_error
from tke.auth.v1 import policy_pb2
from tke.internal.auth.identity import PLATFORM_ADMINS
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, machine_pb2

Code = grpc.StatusCode


def forged_cluster(c: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
    forged = cluster_pb2.Cluster()
    forged.CopyFrom(c)
    forged.status.phase = cluster_pb2.CLUSTER_PHASE_RUNNING
    forged.status.control_plane_endpoint = "203.0.113.7:6443"
    forged.status.conditions.add(type="EnsureControlPlane", status=meta_pb2.CONDITION_STATUS_TRUE)
    return forged


def forged_machine(m: machine_pb2.Machine) -> machine_pb2.Machine:
    forged = machine_pb2.Machine()
    forged.CopyFrom(m)
    forged.status.phase = machine_pb2.MACHINE_PHASE_RUNNING
    forged.status.provider_id = "aws:///us-east-1a/i-0123456789abcdef0"
    return forged


async def objects_of(owner: Client) -> tuple[cluster_pb2.Cluster, machine_pb2.Machine]:
    c = await owner.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1")))
    m = await owner.machines.Create(machine_pb2.CreateMachineRequest(machine=machine("m1", "c1")))
    return c, m


async def test_tenant_roles_cannot_write_status_of_their_own_objects(platform: Platform) -> None:
    ann = await platform.member("ann", "team-a", "admin")
    eve = await platform.member("eve", "team-a", "editor")
    # The controller's identity as deploy/ gives it: a member of tke:platform-admins.
    controller = await platform.member("tke-controller", "default", groups=[PLATFORM_ADMINS])
    c, m = await objects_of(ann)

    for tenant_user in (ann, eve):
        err = await expect_error(
            tenant_user.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=forged_cluster(c))),
            Code.PERMISSION_DENIED,
        )
        assert "update-status clusters/c1" in (err.details() or ""), err.details()
        err = await expect_error(
            tenant_user.machines.UpdateStatus(machine_pb2.UpdateMachineStatusRequest(machine=forged_machine(m))),
            Code.PERMISSION_DENIED,
        )
        assert "update-status machines/m1" in (err.details() or ""), err.details()
    # Nothing was written.
    stored = await ann.clusters.Get(cluster_pb2.GetClusterRequest(name="c1"))
    assert stored.status == cluster_pb2.ClusterStatus()
    assert stored.metadata.resource_version == c.metadata.resource_version
    stored_m = await ann.machines.Get(machine_pb2.GetMachineRequest(name="m1"))
    assert stored_m.status == machine_pb2.MachineStatus()
    assert stored_m.metadata.resource_version == m.metadata.resource_version

    # What stays theirs: the spec and metadata of their objects.
    relabelled = cluster_pb2.Cluster()
    relabelled.CopyFrom(stored)
    relabelled.metadata.labels["owner"] = "eve"
    mask = field_mask_pb2.FieldMask(paths=["metadata.labels"])
    await eve.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=relabelled, update_mask=mask))

    # The controller writes status in any tenant, naming the object's tenant.
    c = await controller.clusters.Get(cluster_pb2.GetClusterRequest(name="c1", tenant_id="team-a"))
    written = await controller.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=forged_cluster(c)))
    assert written.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING
    assert written.metadata.labels["owner"] == "eve"
    written_m = await controller.machines.UpdateStatus(
        machine_pb2.UpdateMachineStatusRequest(machine=forged_machine(stored_m))
    )
    assert written_m.status.provider_id == "aws:///us-east-1a/i-0123456789abcdef0"
    seen = await ann.clusters.Get(cluster_pb2.GetClusterRequest(name="c1"))
    assert seen.status.control_plane_endpoint == "203.0.113.7:6443"


async def test_a_tenant_admin_cannot_grant_itself_status(platform: Platform) -> None:
    ann = await platform.member("ann", "team-a", "admin")
    for rules in ((["update-status"], ["clusters"]), (["*"], ["clusters"]), (["*"], ["*"])):
        await expect_error(
            ann.policy.CreateRole(policy_pb2.CreateRoleRequest(role=role("status-writer", "team-a", rules))),
            Code.PERMISSION_DENIED,
        )
    # A binding of a role that does not exist yet could later give anything, status included.
    await expect_error(
        ann.policy.CreateRoleBinding(
            policy_pb2.CreateRoleBindingRequest(role_binding=binding("later", "team-a", "status-writer", users=["ann"]))
        ),
        Code.PERMISSION_DENIED,
    )
    # A role of what she holds, and its binding, are still hers to write.
    await ann.policy.CreateRole(
        policy_pb2.CreateRoleRequest(role=role("operator", "team-a", (["get", "update"], ["clusters", "machines"])))
    )
    await ann.policy.CreateRoleBinding(
        policy_pb2.CreateRoleBindingRequest(role_binding=binding("ops", "team-a", "operator", users=["ann"]))
    )
    # A platform administrator may still give a tenant user status, deliberately.
    await platform.root.policy.CreateRole(
        policy_pb2.CreateRoleRequest(role=role("status-writer", "team-a", (["update-status"], ["clusters"])))
    )
