"""The aws cluster provider's network against moto: made once even when a controller dies in
the middle of a step and another runs it again (everything is found by its tags), adopted
resources used and never deleted, and what it made deleted in dependency order. Also what the
apiserver refuses in an aws cluster's spec, and user data over EC2's limit."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from typing import Any

import pytest

from tests.support.aws import AWSProxy, Moto, NoDialer, an_image
from tests.support.provider_steps import MemoryCredentialStore, run_steps
from tke.internal.provider.contract import ClusterContext, Tools
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.errors import PermanentError
from tke.internal.provider.nodeprep import Profile
from tke.platform.v1 import cluster_pb2
from tke.plugins.aws import tags, userdata
from tke.plugins.cluster_providers.aws import AWSClusterProvider

pytestmark = pytest.mark.timeout(120)
NETWORK_STEPS = 4  # EnsureNetwork, EnsureClusterCredential, EnsureControlPlaneInterfaces, EnsureEndpoint


def cluster(image: str, **aws: Any) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name, c.metadata.uid, c.metadata.tenant_id = "prod", str(uuid.uuid4()), "team-a"
    c.spec.type, c.spec.version = "aws", "1.31.2"
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    spec = c.spec.aws
    spec.control_plane.count = 3
    spec.control_plane.machine.instance_type = "m5.large"
    spec.control_plane.machine.image_id = image
    spec.load_balancer = True
    for key, value in aws.items():
        if key == "subnets":
            for s in value:
                spec.subnets.add(**s)
        else:
            setattr(spec, key, value)
    return c


def context(c: cluster_pb2.Cluster) -> ClusterContext:
    tools = Tools(
        dialer=NoDialer(),
        credentials=ConfiguredCredentials({}).for_tenant("team-a"),
        cluster_credentials=MemoryCredentialStore(),
    )
    return ClusterContext(obj=c, machines=[], tools=tools)


def mine(ec2: Any, uid: str) -> dict[str, int]:
    """How many of each kind of resource carry the cluster's uid."""
    by_uid = [{"Name": f"tag:{tags.CLUSTER_UID}", "Values": [uid]}]
    return {
        "vpcs": len(ec2.describe_vpcs(Filters=by_uid)["Vpcs"]),
        "subnets": len(ec2.describe_subnets(Filters=by_uid)["Subnets"]),
        "groups": len(ec2.describe_security_groups(Filters=by_uid)["SecurityGroups"]),
        "gateways": len(ec2.describe_internet_gateways(Filters=by_uid)["InternetGateways"]),
        "tables": len(ec2.describe_route_tables(Filters=by_uid)["RouteTables"]),
        "interfaces": len(ec2.describe_network_interfaces(Filters=by_uid)["NetworkInterfaces"]),
    }


async def test_a_controller_dying_mid_step_makes_nothing_twice_and_delete_removes_it_all(moto: Moto) -> None:
    ec2, elb = moto.client("ec2"), moto.client("elbv2")
    subnets = [{"zone": "us-east-1a", "cidr": "10.60.1.0/24"}, {"zone": "us-east-1b", "cidr": "10.60.2.0/24"}]
    c = cluster(an_image(ec2), vpc_cidr="10.60.0.0/16", internet_gateway=True, subnets=subnets)
    ctx = context(c)
    with AWSProxy(moto.url) as proxy:
        # The first controller dies once the nodes' security group exists, its answer unheard.
        proxy.state.hold.add("CreateSecurityGroup")
        first = AWSClusterProvider(endpoint_url=proxy.url, region="us-east-1")
        step = asyncio.create_task(first.ensure_network(ctx))
        await asyncio.to_thread(proxy.state.held.wait, 60)
        step.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await step
        assert c.status.aws.vpc_id == ""  # nothing was recorded
    again = AWSClusterProvider(endpoint_url=moto.url, region="us-east-1")
    await run_steps(again.create_steps[:NETWORK_STEPS], ctx)
    await run_steps(again.create_steps[:NETWORK_STEPS], ctx)  # and once more: nothing new
    uid = c.metadata.uid
    assert mine(ec2, uid) == {"vpcs": 1, "subnets": 2, "groups": 2, "gateways": 1, "tables": 1, "interfaces": 3}
    assert len(elb.describe_load_balancers()["LoadBalancers"]) == 1
    assert c.status.control_plane_endpoint == f"{c.status.aws.load_balancer_dns_name}:6443"

    await run_steps(again.delete_steps, ctx)
    assert mine(ec2, uid) == {"vpcs": 0, "subnets": 0, "groups": 0, "gateways": 0, "tables": 0, "interfaces": 0}
    assert elb.describe_load_balancers()["LoadBalancers"] == []


async def test_masters_go_only_into_the_network_made_for_their_cluster(moto: Moto) -> None:
    # A tenant may hold update-status (a role a platform administrator wrote, an external
    # authorizer) and write status.aws between EnsureNetwork and the steps that
    # place the masters' interfaces and the load balancer: with the platform's identity those
    # read the ids from status, so each must carry this cluster's tags.
    ec2 = moto.client("ec2")
    other = cluster(an_image(ec2), vpc_cidr="10.61.0.0/16", subnets=[{"zone": "us-east-1a", "cidr": "10.61.1.0/24"}])
    provider = AWSClusterProvider(endpoint_url=moto.url, region="us-east-1")
    await provider.ensure_network(context(other))
    c = cluster(an_image(ec2), vpc_cidr="10.62.0.0/16", subnets=[{"zone": "us-east-1a", "cidr": "10.62.1.0/24"}])
    ctx = context(c)
    await run_steps(provider.create_steps[:2], ctx)  # EnsureNetwork, EnsureClusterCredential
    c.status.aws.subnets[0].id = other.status.aws.subnets[0].id
    c.status.aws.control_plane_security_group_id = other.status.aws.control_plane_security_group_id
    with pytest.raises(PermanentError, match="is not this cluster's"):
        await provider.ensure_interfaces(ctx)
    assert mine(ec2, c.metadata.uid)["interfaces"] == 0
    assert mine(ec2, other.metadata.uid)["interfaces"] == 0


async def test_adopted_resources_are_used_and_left_alone(moto: Moto) -> None:
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.70.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.70.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    cp = ec2.create_security_group(GroupName="cp", Description="cp", VpcId=vpc)["GroupId"]
    nodes = ec2.create_security_group(GroupName="nodes", Description="nodes", VpcId=vpc)["GroupId"]
    c = cluster(
        an_image(ec2),
        vpc_id=vpc,
        subnets=[{"id": subnet}],
        control_plane_security_group_id=cp,
        node_security_group_id=nodes,
        load_balancer=False,
    )
    c.spec.aws.control_plane.count = 1
    ctx = context(c)
    p = AWSClusterProvider(endpoint_url=moto.url, region="us-east-1")
    # With the platform's own AWS identity a tenant cannot adopt anything: it could be another's.
    with pytest.raises(PermanentError, match=r"needs the tenant's spec\.credential_ref"):
        await p.ensure_network(ctx)
    key = CredentialConfig(aws_access_key_id_env="AWS_ACCESS_KEY_ID", aws_secret_access_key_env="AWS_SECRET_ACCESS_KEY")
    ctx.tools.credentials = ConfiguredCredentials({"team-a/team-a-aws": key}).for_tenant("team-a")
    c.spec.credential_ref = "team-a-aws"
    await run_steps(p.create_steps[:NETWORK_STEPS], ctx)
    assert (c.status.aws.vpc_id, [s.id for s in c.status.aws.subnets]) == (vpc, [subnet])
    assert (c.status.aws.control_plane_security_group_id, c.status.aws.node_security_group_id) == (cp, nodes)
    master = ec2.describe_network_interfaces(Filters=[{"Name": f"tag:{tags.CLUSTER_UID}", "Values": [c.metadata.uid]}])
    (interface,) = master["NetworkInterfaces"]
    assert interface["SubnetId"] == subnet and [g["GroupId"] for g in interface["Groups"]] == [cp]
    # Without a load balancer the single master's address is the endpoint.
    assert c.status.control_plane_endpoint == f"{interface['PrivateIpAddress']}:6443"
    await run_steps(p.delete_steps, ctx)
    assert ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"] and ec2.describe_subnets(SubnetIds=[subnet])["Subnets"]
    assert len(ec2.describe_security_groups(GroupIds=[cp, nodes])["SecurityGroups"]) == 2
    assert ec2.describe_network_interfaces(NetworkInterfaceIds=[])["NetworkInterfaces"] == []


def test_what_an_aws_cluster_spec_may_not_say() -> None:
    p = AWSClusterProvider()
    c = cluster("ami-0123456789abcdef0", subnets=[{"zone": "us-east-1a", "cidr": "10.0.1.0/24"}])
    assert p.validate(c) == []
    c.spec.aws.control_plane.count = 2
    c.spec.aws.load_balancer = False
    c.spec.aws.vpc_cidr = "10.1.0.0/16"
    c.spec.aws.subnets.add(zone="nowhere", cidr="10.1.0.0/33")
    c.spec.aws.control_plane.machine.subnet_id = "subnet-0123456789abcdef0"
    c.spec.machines.add(ip="10.0.0.1")
    c.spec.aws.node_security_group_id = "sg-0123456789abcdef0"
    assert sorted(v.field for v in p.validate(c)) == [
        "cluster.spec.aws.control_plane.count",
        "cluster.spec.aws.control_plane.machine.subnet_id",
        "cluster.spec.aws.load_balancer",
        "cluster.spec.aws.node_security_group_id",
        "cluster.spec.aws.subnets[0].cidr",
        "cluster.spec.aws.subnets[1].cidr",
        "cluster.spec.aws.subnets[1].zone",
        "cluster.spec.machines",
    ]
    three = cluster("ami-0123456789abcdef0", subnets=[{"zone": "us-east-1a", "cidr": "10.0.1.0/24"}])
    three.spec.aws.load_balancer = False
    assert [v.field for v in p.validate(three)] == ["cluster.spec.aws.load_balancer"]
    # Installed: neither the version nor the number of masters changes in place.
    three.spec.aws.load_balancer = True
    three.status.control_plane_endpoint, three.status.version = "lb:6443", "1.31.2"
    three.status.control_plane.add(node_name="a")
    three.spec.version = "1.32.0"
    assert sorted(v.field for v in p.validate(three)) == [
        "cluster.spec.aws.control_plane.count",
        "cluster.spec.version",
    ]


def test_user_data_over_ec2s_limit_is_gzipped_and_refused_when_still_too_large() -> None:
    small = userdata.NodeBootstrap(env={}, profile=Profile(), version="1.31.2", kubeadm_config="x: 1\n", kubeadm="join")
    assert userdata.pack(small.document()) == small.document().encode()
    compressible = userdata.NodeBootstrap(
        env={"TKE_NOTE": "a" * 30000}, profile=Profile(), version="1.31.2", kubeadm_config="x: 1\n", kubeadm="join"
    )
    packed = userdata.pack(compressible.document())
    assert packed[:2] == b"\x1f\x8b" and len(packed) <= userdata.MAX_USER_DATA
    assert userdata.unpack(packed) == compressible.document()
    noise = base64.b64encode(os.urandom(30000)).decode()  # 40 KB that gzip cannot shrink enough
    large = userdata.NodeBootstrap(
        env={"TKE_NOTE": noise}, profile=Profile(), version="1.31.2", kubeadm_config="", kubeadm="join"
    )
    with pytest.raises(PermanentError, match="over EC2's 16384-byte user data limit"):
        userdata.pack(large.document())
