"""The aws-eni IP provider against moto's EC2 server: addresses assigned to the node's
interface as secondary IPs (the exact address ipamd chose), released only for their owner,
the per-interface limit, a restarted provider that finds its owners in EC2, and ipamd's core
allocating through it and reconciling at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.ipamd.conftest import allocate_request
from tests.support.aws import Moto, an_image
from tests.support.memory_ip_storage import MemoryIPStorage
from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.provider import Assignment, ProviderRefused
from tke.internal.ipamd.provisioning import provider_owner
from tke.ipam.v1 import ipam_pb2
from tke.plugins.aws import tags
from tke.plugins.ip_providers.aws_eni import AWSENIProvider, ip_tag, owner_digest
from tke.plugins.ip_providers.static import StaticProvider

pytestmark = pytest.mark.timeout(120)


@dataclass
class Net:
    ec2: Any
    vpc: str
    subnet: str
    node: str  # the instance's private DNS name: the node's name
    eni: str


@pytest.fixture
def net(moto: Moto) -> Net:
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.2.0/24", AvailabilityZone="us-east-1b")
    instance = ec2.run_instances(
        ImageId=an_image(ec2), InstanceType="t3.medium", MinCount=1, MaxCount=1, SubnetId=subnet
    )["Instances"][0]
    eni = instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
    return Net(ec2, vpc, subnet, instance["PrivateDnsName"], eni)


@pytest.fixture
async def provider(moto: Moto, net: Net) -> AsyncIterator[AWSENIProvider]:
    p = AWSENIProvider(vpc_id=net.vpc, endpoint_url=moto.url, region="us-east-1")
    yield p
    await p.close()


def on_interface(net: Net) -> tuple[list[str], dict[str, str]]:
    """(secondary addresses, tke.cloud/ip tags) of the node's interface, as EC2 has them."""
    eni = net.ec2.describe_network_interfaces(NetworkInterfaceIds=[net.eni])["NetworkInterfaces"][0]
    secondary = [a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"] if not a["Primary"]]
    owners = {k: v for k, v in tags.read(eni.get("TagSet")).items() if k.startswith(tags.IP_PREFIX)}
    return secondary, owners


async def test_an_address_is_assigned_to_the_nodes_interface_and_released_by_its_owner(
    provider: AWSENIProvider, net: Net
) -> None:
    subnets = await provider.subnets()
    assert sorted(s.cidr for s in subnets) == ["10.40.1.0/24", "10.40.2.0/24"]
    assert next(s for s in subnets if s.id == net.subnet).gateway == "10.40.1.1"

    await provider.reserve(net.subnet, "10.40.1.50", "pod-a@1")
    await provider.bind(net.subnet, "10.40.1.50", net.node, "pod-a@1")
    await provider.bind(net.subnet, "10.40.1.50", net.node, "pod-a@1")  # again: nothing changes
    assert on_interface(net) == (["10.40.1.50"], {ip_tag("10.40.1.50"): owner_digest("pod-a@1")})

    # Another owner (a late request of a rolled-back allocation) can neither take nor free it.
    with pytest.raises(ProviderRefused, match="held by another allocation"):
        await provider.reserve(net.subnet, "10.40.1.50", "pod-b@2")
    with pytest.raises(ProviderRefused, match="not reserved for this owner"):
        await provider.bind(net.subnet, "10.40.1.50", net.node, "pod-b@2")
    await provider.release(net.subnet, "10.40.1.50", "pod-b@2")
    assert on_interface(net)[0] == ["10.40.1.50"]

    await provider.release(net.subnet, "10.40.1.50", "pod-a@1")
    assert on_interface(net) == ([], {})
    await provider.release(net.subnet, "10.40.1.50", "pod-a@1")  # released already: a success

    # An address outside the subnet, or an interface's own address, is refused.
    with pytest.raises(ProviderRefused, match="not in subnet"):
        await provider.reserve(net.subnet, "10.40.2.9", "pod-c@3")
    primary = net.ec2.describe_network_interfaces(NetworkInterfaceIds=[net.eni])["NetworkInterfaces"][0]
    with pytest.raises(ProviderRefused, match="an interface outside tke-ipamd"):
        await provider.reserve(net.subnet, primary["PrivateIpAddress"], "pod-c@3")
    with pytest.raises(ProviderRefused, match="no running instance"):
        await provider.bind(net.subnet, "10.40.1.60", "ip-10-40-9-9.ec2.internal", "pod-c@3")


async def test_a_full_interface_is_refused_with_the_instance_types_limit(provider: AWSENIProvider, net: Net) -> None:
    for i in range(5):  # t3.medium: 6 addresses per interface, the primary and 5 secondary
        await provider.bind(net.subnet, f"10.40.1.{100 + i}", net.node, f"pod-{i}@1")
    with pytest.raises(ProviderRefused) as err:
        await provider.bind(net.subnet, "10.40.1.110", net.node, "pod-6@1")
    assert "is full: instance type t3.medium allows 6 IPv4 addresses per interface" in str(err.value)
    assert len(on_interface(net)[0]) == 5
    await provider.release(net.subnet, "10.40.1.100", "pod-0@1")
    await provider.bind(net.subnet, "10.40.1.110", net.node, "pod-6@1")


async def test_a_restarted_provider_finds_the_owners_in_ec2_and_reconciles(
    moto: Moto, provider: AWSENIProvider, net: Net
) -> None:
    for ip, owner in (("10.40.1.21", "kept@1"), ("10.40.1.22", "leaked@1"), ("10.40.1.23", "lost@1")):
        await provider.bind(net.subnet, ip, net.node, owner)
    # Someone unassigned one address behind tke-ipamd's back.
    net.ec2.unassign_private_ip_addresses(NetworkInterfaceId=net.eni, PrivateIpAddresses=["10.40.1.23"])

    restarted = AWSENIProvider(vpc_id=net.vpc, endpoint_url=moto.url, region="us-east-1")
    try:
        # The owners are in EC2, not in the old process: fencing works as before.
        await restarted.release(net.subnet, "10.40.1.21", "someone-else@9")
        assert "10.40.1.21" in on_interface(net)[0]
        # ipamd's allocations: 21 and 23 (22's owner is gone from ipamd's storage).

        async def allocations() -> list[Assignment]:
            return [Assignment("10.40.1.21", net.node, "kept@1"), Assignment("10.40.1.23", net.node, "lost@1")]

        done = await restarted.reconcile(net.subnet, allocations)
    finally:
        await restarted.close()
    assert sorted(on_interface(net)[0]) == ["10.40.1.21", "10.40.1.23"]
    assert on_interface(net)[1] == {
        ip_tag("10.40.1.21"): owner_digest("kept@1"),
        ip_tag("10.40.1.23"): owner_digest("lost@1"),
    }
    assert any("released 10.40.1.22" in d for d in done) and any("bound 10.40.1.23" in d for d in done)


async def test_ipamd_allocates_the_address_it_chose_on_the_nodes_interface(moto: Moto, net: Net) -> None:
    storage = MemoryIPStorage()
    provider = AWSENIProvider(vpc_id=net.vpc, endpoint_url=moto.url, region="us-east-1")
    ipam = IPAM(storage, {"static": StaticProvider(), "aws-eni": provider}, cooldown=0)
    pool = ipam_pb2.Pool(
        name="vpc-a", cidr="10.40.1.0/24", provider=ipam_pb2.PoolProvider(name="aws-eni", subnet_id=net.subnet)
    )
    await ipam.create_pool(pool)
    got = (await ipam.allocate(allocate_request("web-0", node=net.node))).allocation
    assert on_interface(net) == ([got.ip], {ip_tag(got.ip): owner_digest(provider_owner(got))})

    # ipamd restarts: the new core's provider reconciles with the stored allocations (nothing
    # to change), then releases through EC2.
    await provider.close()
    provider = AWSENIProvider(vpc_id=net.vpc, endpoint_url=moto.url, region="us-east-1")
    ipam = IPAM(storage, {"static": StaticProvider(), "aws-eni": provider}, cooldown=0)
    await ipam.reconcile_providers()
    assert on_interface(net)[0] == [got.ip]
    assert (await ipam.release("c-web-0", "eth0")).found
    assert on_interface(net) == ([], {})
    await provider.close()
