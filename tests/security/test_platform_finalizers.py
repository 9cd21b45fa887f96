"""Rule: the platform's finalizers (`tke.cloud/...`, such as the controller's
`tke.cloud/cluster-provider` and `tke.cloud/machine-provider`) are the platform's to add and
remove, as status is. They are what makes the controller tear down what it built for an object
(EC2 instances, VPCs and load balancers in the platform's AWS account, a hosted control plane's
namespace and volumes in the shared meta cluster) before the object goes. A tenant that could
remove one deleted its object at once, leaving all of that running for the operator to pay,
outside every tenant quota (which counts objects), as often as it liked."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from tests.security.platform import Platform
from tests.support.apiserver import cluster, machine
from tests.support.rpc import expect_error
from tke.internal.auth.identity import PLATFORM_ADMINS
from tke.platform.v1 import cluster_pb2, machine_pb2

Code = grpc.StatusCode
CLUSTER_FINALIZER = "tke.cloud/cluster-provider"
MACHINE_FINALIZER = "tke.cloud/machine-provider"
FINALIZERS = field_mask_pb2.FieldMask(paths=["metadata.finalizers"])


async def test_a_tenant_cannot_remove_the_platforms_finalizer_and_delete_past_the_teardown(
    platform: Platform,
) -> None:
    ann = await platform.member("ann", "team-a", "admin")
    eve = await platform.member("eve", "team-a", "editor")
    controller = await platform.member("tke-controller", "default", groups=[PLATFORM_ADMINS])
    await ann.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1")))
    await ann.machines.Create(machine_pb2.CreateMachineRequest(machine=machine("m1", "c1")))
    # The controller adds its finalizers, as its lifecycle does first.
    c = await controller.clusters.Get(cluster_pb2.GetClusterRequest(name="c1", tenant_id="team-a"))
    c.metadata.finalizers.append(CLUSTER_FINALIZER)
    await controller.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c, update_mask=FINALIZERS))
    m = await controller.machines.Get(machine_pb2.GetMachineRequest(name="m1", tenant_id="team-a"))
    m.metadata.finalizers.append(MACHINE_FINALIZER)
    await controller.machines.Update(machine_pb2.UpdateMachineRequest(machine=m, update_mask=FINALIZERS))

    for tenant_user in (ann, eve):
        # Removed with a mask, with a whole-object update, and after the delete marked it.
        c = await tenant_user.clusters.Get(cluster_pb2.GetClusterRequest(name="c1"))
        del c.metadata.finalizers[:]
        err = await expect_error(
            tenant_user.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c, update_mask=FINALIZERS)),
            Code.PERMISSION_DENIED,
        )
        assert "tke.cloud/cluster-provider" in (err.details() or ""), err.details()
        await expect_error(
            tenant_user.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c)), Code.PERMISSION_DENIED
        )
        m = await tenant_user.machines.Get(machine_pb2.GetMachineRequest(name="m1"))
        del m.metadata.finalizers[:]
        await expect_error(
            tenant_user.machines.Update(machine_pb2.UpdateMachineRequest(machine=m, update_mask=FINALIZERS)),
            Code.PERMISSION_DENIED,
        )
    marked = await ann.machines.Delete(machine_pb2.DeleteMachineRequest(name="m1"))
    assert marked.metadata.HasField("deletion_timestamp")
    del marked.metadata.finalizers[:]
    await expect_error(
        ann.machines.Update(machine_pb2.UpdateMachineRequest(machine=marked, update_mask=FINALIZERS)),
        Code.PERMISSION_DENIED,
    )
    # Still there, waiting for the controller's teardown.
    stored = await ann.machines.Get(machine_pb2.GetMachineRequest(name="m1"))
    assert list(stored.metadata.finalizers) == [MACHINE_FINALIZER]

    # Nor may a tenant put the platform's finalizer where the platform would never remove it.
    await ann.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c2")))
    c2 = cluster("c3")
    c2.metadata.finalizers.append("tke.cloud/other")
    await expect_error(ann.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c2)), Code.PERMISSION_DENIED)

    # What stays the tenant's: finalizers of its own (its own tooling's), and deleting.
    c = await ann.clusters.Get(cluster_pb2.GetClusterRequest(name="c1"))
    c.metadata.finalizers.append("example.com/backup")
    c = await ann.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c, update_mask=FINALIZERS))
    assert list(c.metadata.finalizers) == [CLUSTER_FINALIZER, "example.com/backup"]
    c.metadata.finalizers.remove("example.com/backup")
    await ann.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c, update_mask=FINALIZERS))

    # The controller removes its own when its teardown is done, and the object goes.
    m = await controller.machines.Get(machine_pb2.GetMachineRequest(name="m1", tenant_id="team-a"))
    del m.metadata.finalizers[:]
    await controller.machines.Update(machine_pb2.UpdateMachineRequest(machine=m, update_mask=FINALIZERS))
    await expect_error(ann.machines.Get(machine_pb2.GetMachineRequest(name="m1")), Code.NOT_FOUND)
