"""Rule: where an aws cluster's or machine's resources are (the account its credential_ref names,
the region) cannot move once the platform started making them, and the teardown looks where they
were made. Before, a tenant changed spec.aws.region (or spec.credential_ref) of a Running cluster
made with the platform's own AWS identity, then deleted it: the delete steps looked in the other
region (account), found nothing tagged with the cluster's uid, succeeded, and the finalizer went,
while the VPC, the load balancer and the masters kept running, billed to the operator and counted
in no tenant's quota."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.aws.test_network import NETWORK_STEPS, cluster, context, mine
from tests.support.apiserver import Running
from tests.support.aws import Moto, an_image, aws_cluster
from tests.support.controller import publish_credentials
from tests.support.provider_steps import run_steps
from tests.support.rpc import bad_request_fields, expect_error
from tke.internal.storage.etcd import EtcdConfig
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, machine_pb2
from tke.plugins.cluster_providers.aws import AWSClusterProvider

pytestmark = pytest.mark.timeout(120)
IMAGE = "ami-0123456789abcdef0"
Code = grpc.StatusCode


async def test_a_region_changed_in_the_spec_does_not_move_the_teardown(moto: Moto) -> None:
    # A cluster whose spec was changed before the apiserver refused it (stored earlier, or by an
    # apiserver without the rule): the delete steps look where EnsureNetwork made the network.
    ec2, elb = moto.client("ec2"), moto.client("elbv2")
    subnets = [{"zone": "us-east-1a", "cidr": "10.63.1.0/24"}]
    c = cluster(an_image(ec2), vpc_cidr="10.63.0.0/16", internet_gateway=True, subnets=subnets, region="us-east-1")
    ctx = context(c)
    p = AWSClusterProvider(endpoint_url=moto.url, region="us-east-1")
    await run_steps(p.create_steps[:NETWORK_STEPS], ctx)
    made = mine(ec2, c.metadata.uid)
    assert made == {"vpcs": 1, "subnets": 1, "groups": 2, "gateways": 1, "tables": 1, "interfaces": 3}
    assert c.status.aws.region == "us-east-1"
    c.spec.aws.region = "us-west-2"
    await run_steps(p.delete_steps, ctx)
    assert mine(ec2, c.metadata.uid) == dict.fromkeys(made, 0)
    assert elb.describe_load_balancers()["LoadBalancers"] == []


def _started(obj: cluster_pb2.Cluster | machine_pb2.Machine) -> None:
    """What the controller writes when it starts the first create step."""
    cond = obj.status.conditions.add(type="EnsureNetwork", status=meta_pb2.CONDITION_STATUS_UNKNOWN)
    cond.reason = "Running"


async def test_the_account_and_region_cannot_move_once_the_platform_started_making_them(
    api: Running, etcd_config: EtcdConfig
) -> None:
    await publish_credentials(etcd_config, "default/own-aws")
    c = aws_cluster(IMAGE)
    c.spec.aws.region = "us-east-1"
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))

    def change(**fields: str) -> cluster_pb2.UpdateClusterRequest:
        new = cluster_pb2.Cluster()
        new.metadata.name = "prod"
        if "region" in fields:
            new.spec.aws.region = fields["region"]
        if "credential_ref" in fields:
            new.spec.credential_ref = fields["credential_ref"]
        paths = ["spec.aws.region" if f == "region" else "spec.credential_ref" for f in fields]
        return cluster_pb2.UpdateClusterRequest(cluster=new, update_mask=field_mask_pb2.FieldMask(paths=paths))

    # Before the controller started, the spec may still say another region or account.
    await api.clusters.Update(change(region="eu-west-1"))
    await api.clusters.Update(change(region="us-east-1"))
    await api.clusters.Update(change(credential_ref="own-aws"))
    await api.clusters.Update(change(credential_ref=""))

    stored = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="prod"))
    _started(stored)
    stored = await api.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=stored))
    for request, field in (
        (change(region="us-west-2"), "cluster.spec.aws.region"),
        (change(credential_ref="own-aws"), "cluster.spec.credential_ref"),
    ):
        err = await expect_error(api.clusters.Update(request), Code.INVALID_ARGUMENT)
        assert bad_request_fields(err) == [field]
        assert "once the platform started making it" in (err.details() or "")
    # The status says where the network is, whatever the default of the apiserver's options.
    stored.status.aws.region = "us-east-1"
    stored = await api.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=stored))
    err = await expect_error(api.clusters.Update(change(region="eu-west-1")), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["cluster.spec.aws.region"]
    # Naming the region it is in changes nothing, and is not refused.
    await api.clusters.Update(change(region="us-east-1"))
    # Other changes, and the delete, go on, also with an apiserver whose default region is not the
    # controller's (this one has none: spec.aws.region "" would read as "").
    label = cluster_pb2.Cluster()
    label.metadata.name, label.spec.display_name = "prod", "production"
    mask = field_mask_pb2.FieldMask(paths=["spec.display_name"])
    await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=label, update_mask=mask))

    # A cluster whose spec names no region (the controller's option chose it) is updated as before.
    default = aws_cluster(IMAGE)
    default.metadata.name = "dev"
    default.spec.aws.vpc_cidr = "10.51.0.0/16"
    del default.spec.aws.subnets[:]
    default.spec.aws.subnets.add(zone="us-east-1a", cidr="10.51.1.0/24")
    made = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=default))
    _started(made)
    made.status.aws.region = "us-east-1"
    await api.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=made))
    label.metadata.name = "dev"
    await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=label, update_mask=mask))

    m = machine_pb2.Machine()
    m.metadata.name = "w1"
    m.spec.cluster_name, m.spec.type = "prod", "aws"
    m.spec.role = machine_pb2.MACHINE_ROLE_WORKER
    m.spec.aws.instance_type, m.spec.aws.image_id = "t3.medium", IMAGE
    await api.machines.Create(machine_pb2.CreateMachineRequest(machine=m))
    to_own = machine_pb2.Machine()
    to_own.metadata.name, to_own.spec.credential_ref = "w1", "own-aws"
    ref_mask = field_mask_pb2.FieldMask(paths=["spec.credential_ref"])
    await api.machines.Update(machine_pb2.UpdateMachineRequest(machine=to_own, update_mask=ref_mask))
    to_own.spec.credential_ref = ""
    await api.machines.Update(machine_pb2.UpdateMachineRequest(machine=to_own, update_mask=ref_mask))
    stored_m = await api.machines.Get(machine_pb2.GetMachineRequest(name="w1"))
    stored_m.status.provider_id = "aws:///us-east-1a/i-0123456789abcdef0"
    await api.machines.UpdateStatus(machine_pb2.UpdateMachineStatusRequest(machine=stored_m))
    to_own.spec.credential_ref = "own-aws"
    err = await expect_error(
        api.machines.Update(machine_pb2.UpdateMachineRequest(machine=to_own, update_mask=ref_mask)),
        Code.INVALID_ARGUMENT,
    )
    assert bad_request_fields(err) == ["machine.spec.credential_ref"]

    await api.machines.Delete(machine_pb2.DeleteMachineRequest(name="w1"))
    deleted = await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="prod"))
    assert deleted.spec.aws.region == "us-east-1" and deleted.spec.credential_ref == ""
