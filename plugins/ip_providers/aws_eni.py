"""The aws-eni IP provider: pool addresses are secondary private IPv4 addresses of the nodes'
network interfaces (ENIs) in a VPC subnet, as the AWS VPC CNI and galaxy's cloud floating IPs
give pods addresses of the VPC itself.

- A pool is backed by a subnet (pool.provider.subnet_id); subnets() lists the VPC's subnets
  (option vpc_id), or every subnet the account sees in the region.
- bind assigns the exact address tke-ipamd chose to the node's primary interface
  (AssignPrivateIpAddresses, AllowReassignment false: EC2 refuses an address another interface
  holds); release unassigns it (UnassignPrivateIpAddresses).
- A node is found by name: the running instance whose private DNS name is the node's name (the
  name the aws machine provider and EC2's default hostnames give nodes), or whose
  tke.cloud/node-name tag is (nodes named otherwise); its interface is the one at device 0,
  which must be in the pool's subnet.

Fencing (the `owner` token of the IPProvider contract): the interface holding an address
carries the tag tke.cloud/ip/<address> = a digest of the owner token. bind writes the tag
before assigning, release removes the address only while the tag names the same owner, and
removes the tag itself with DeleteTags naming the value, which EC2 applies only if the value
still matches. So a late bind or release of a rolled-back allocation finds another owner's tag
and changes nothing. The owner lives in EC2 next to the address, not in this process: a
restarted tke-ipamd (or another replica) finds it there. One window remains: EC2 has no
compare-and-swap between reading the tag and unassigning, so two releases of the same address
by different owners racing within one round trip could both pass the check; tke-ipamd never
sends those (its storage gives an address to a new owner only after the old owner's release
returned).

Limits: an interface holds at most the instance type's IPv4 addresses per interface (from
DescribeInstanceTypes, else the table below); at most 50 tags per resource bound the tagged
addresses as well. A full interface is a ProviderRefused naming the limit.

reserve checks that the address is in the subnet and that no interface holds it for someone
else (EC2 has no reservation of an address without an interface: tke-ipamd's storage is the
reservation until bind). reconcile (tke-ipamd calls it at start with the pool's allocations)
reads the subnet's interfaces (DescribeNetworkInterfaces): an address tagged for an owner that
tke-ipamd no longer has is released; an allocation whose address is not on its node's
interface is bound again.

Errors: throttling and 5xx are retried by botocore (retry mode, max attempts); what remains is
ProviderUnavailable. AWS refusing (invalid address, limit, permission) is ProviderRefused.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tke.internal.config.loader import from_dict
from tke.internal.ipamd.provider import Assignment, ProviderRefused, ProviderUnavailable, Subnet
from tke.internal.provider.credentials import ConfiguredCredentials, Credential, CredentialConfig
from tke.internal.provider.errors import PermanentError, StepError
from tke.plugins.aws import client, tags
from tke.plugins.aws.client import AWSError, ClientOptions, Clients

log = logging.getLogger(__name__)

NODE_NAME_TAG = "tke.cloud/node-name"
MAX_TAGS = 50
# IPv4 addresses per interface of common instance types (EC2's documented limits), for when
# DescribeInstanceTypes is not allowed.
ADDRESSES_PER_INTERFACE = {
    "t3.nano": 2, "t3.micro": 2, "t3.small": 4, "t3.medium": 6, "t3.large": 12, "t3.xlarge": 15, "t3.2xlarge": 15,
    "t3a.medium": 6, "t3a.large": 12, "t3a.xlarge": 15,
    "m5.large": 10, "m5.xlarge": 15, "m5.2xlarge": 15, "m5.4xlarge": 30, "m5.8xlarge": 30, "m5.12xlarge": 30,
    "m5.16xlarge": 50, "m5.24xlarge": 50, "m6i.large": 10, "m6i.xlarge": 15, "m6i.2xlarge": 15, "m6i.4xlarge": 30,
    "m7i.large": 10, "m7i.xlarge": 15, "m7g.large": 10, "m7g.xlarge": 15,
    "c5.large": 10, "c5.xlarge": 15, "c5.2xlarge": 15, "c5.4xlarge": 30, "c5.9xlarge": 30, "c5.18xlarge": 50,
    "c6i.large": 10, "c6i.xlarge": 15, "c7g.large": 10,
    "r5.large": 10, "r5.xlarge": 15, "r5.2xlarge": 15, "r5.4xlarge": 30, "r6i.large": 10, "r6i.xlarge": 15,
}  # fmt: skip


def owner_digest(owner: str) -> str:
    """What the tag holds: a fixed-length digest of the owner token (tag values are limited to
    256 characters, and the token names a pod)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


def ip_tag(ip: str) -> str:
    return f"{tags.IP_PREFIX}{ip}"


class AWSENIProvider:
    """Options: region, endpoint_url, retry_mode, max_attempts, connect_timeout, read_timeout
    (as the AWS providers'), vpc_id (the subnets listed), and the access key from environment
    variables aws_access_key_id_env and aws_secret_access_key_env (else the standard AWS
    credential chain: an instance role of the node, typically)."""

    def __init__(
        self,
        *,
        vpc_id: str = "",
        aws_access_key_id_env: str = "",
        aws_secret_access_key_env: str = "",
        **options: Any,
    ) -> None:
        self.vpc_id = vpc_id
        # Typed as tke-ipamd's own options: "5" for max_attempts names the option, at start.
        self.clients = Clients(from_dict(ClientOptions, options, "options"))
        self.credential: Credential | None = None
        if aws_access_key_id_env or aws_secret_access_key_env:
            config = CredentialConfig(
                aws_access_key_id_env=aws_access_key_id_env, aws_secret_access_key_env=aws_secret_access_key_env
            )
            try:
                self.credential = ConfiguredCredentials({"ipamd/aws-eni": config}).read("ipamd", "aws-eni")
            except PermanentError as err:
                raise ValueError(str(err)) from None
        self._limits: dict[str, int] = {}
        # node -> (interface id, instance type), cached; the interface is checked on use.
        self._interfaces: dict[str, tuple[str, str]] = {}

    @property
    def ec2(self) -> Any:
        try:
            return self.clients.get("ec2", credential=self.credential)
        except StepError as err:
            raise ProviderRefused(str(err)) from None

    async def close(self) -> None:
        await asyncio.to_thread(self.clients.close)

    async def _call(self, method: Any, **params: Any) -> Any:
        try:
            return await client.call(method, **params)
        except AWSError as err:
            if client.permanent(err.code) or err.code.endswith(".NotFound"):
                raise ProviderRefused(str(err)) from None
            raise ProviderUnavailable(str(err)) from None
        except PermanentError as err:
            raise ProviderRefused(str(err)) from None
        except StepError as err:
            raise ProviderUnavailable(str(err)) from None

    # -- lookups --------------------------------------------------------------------------------

    async def subnets(self) -> list[Subnet]:
        filters = [{"Name": "vpc-id", "Values": [self.vpc_id]}] if self.vpc_id else []
        found = await self._call(self.ec2.describe_subnets, Filters=filters)
        out = []
        for s in found.get("Subnets", []):
            net = ipaddress.IPv4Network(s["CidrBlock"])
            # The VPC router is the subnet's first host address (network + 1).
            out.append(Subnet(s["SubnetId"], s["CidrBlock"], str(net.network_address + 1), s["AvailabilityZone"]))
        return out

    async def _subnet(self, subnet_id: str) -> dict[str, Any]:
        found = await self._call(self.ec2.describe_subnets, SubnetIds=[subnet_id])
        subnets: list[dict[str, Any]] = found.get("Subnets", [])
        if not subnets:
            raise ProviderRefused(f"subnet {subnet_id} does not exist")
        return subnets[0]

    async def _holders(self, ip: str) -> list[dict[str, Any]]:
        """Interfaces that hold `ip` for an owner of ours (tagged), and any interface whose
        addresses include it (EC2's address filter)."""
        tagged = await self._call(
            self.ec2.describe_network_interfaces, Filters=[{"Name": "tag-key", "Values": [ip_tag(ip)]}]
        )
        listed = await self._call(
            self.ec2.describe_network_interfaces, Filters=[{"Name": "addresses.private-ip-address", "Values": [ip]}]
        )
        out = {i["NetworkInterfaceId"]: i for i in tagged.get("NetworkInterfaces", [])}
        for i in listed.get("NetworkInterfaces", []):
            out.setdefault(i["NetworkInterfaceId"], i)
        return list(out.values())

    async def _node_interface(self, node: str) -> dict[str, Any]:
        """The node's primary interface (device 0)."""
        cached = self._interfaces.get(node)
        if cached is not None:
            try:
                found = await self._call(self.ec2.describe_network_interfaces, NetworkInterfaceIds=[cached[0]])
            except ProviderRefused:  # the interface is gone (the node was replaced)
                found = {}
            interfaces = found.get("NetworkInterfaces", [])
            if interfaces and interfaces[0].get("Attachment", {}).get("Status") == "attached":
                return {**interfaces[0], "InstanceType": cached[1]}
            del self._interfaces[node]
        alive = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        instances = []
        for match in (
            {"Name": "private-dns-name", "Values": [node]},
            {"Name": f"tag:{NODE_NAME_TAG}", "Values": [node]},
        ):
            found = await self._call(self.ec2.describe_instances, Filters=[match, *alive])
            instances = [i for r in found.get("Reservations", []) for i in r.get("Instances", [])]
            if instances:
                break
        if not instances:
            raise ProviderRefused(f"node {node}: no running instance has that private DNS name or {NODE_NAME_TAG}")
        primary = [
            n for n in instances[0].get("NetworkInterfaces", []) if n.get("Attachment", {}).get("DeviceIndex") == 0
        ]
        if not primary:
            raise ProviderRefused(f"node {node}: instance {instances[0]['InstanceId']} has no primary interface")
        found = await self._call(
            self.ec2.describe_network_interfaces, NetworkInterfaceIds=[primary[0]["NetworkInterfaceId"]]
        )
        interface: dict[str, Any] = found["NetworkInterfaces"][0]
        interface["InstanceType"] = instances[0].get("InstanceType", "")
        self._interfaces[node] = (interface["NetworkInterfaceId"], interface["InstanceType"])
        return interface

    async def addresses_per_interface(self, instance_type: str) -> int:
        """The instance type's IPv4 addresses per interface (primary included)."""
        if instance_type in self._limits:
            return self._limits[instance_type]
        try:
            found = await client.call(self.ec2.describe_instance_types, InstanceTypes=[instance_type])
            limit = int(found["InstanceTypes"][0]["NetworkInfo"]["Ipv4AddressesPerInterface"])
        except (AWSError, KeyError, IndexError) as err:
            if instance_type not in ADDRESSES_PER_INTERFACE:
                raise ProviderRefused(f"the address limit of instance type {instance_type} is unknown: {err}") from None
            limit = ADDRESSES_PER_INTERFACE[instance_type]
        self._limits[instance_type] = limit
        return limit

    # -- the contract ---------------------------------------------------------------------------

    async def reserve(self, subnet_id: str, ip: str, owner: str) -> None:
        subnet = await self._subnet(subnet_id)
        if ipaddress.IPv4Address(ip) not in ipaddress.IPv4Network(subnet["CidrBlock"]):
            raise ProviderRefused(f"{ip} is not in subnet {subnet_id} ({subnet['CidrBlock']})")
        digest = owner_digest(owner)
        for holder in await self._holders(ip):
            theirs = tags.read(holder.get("TagSet")).get(ip_tag(ip))
            if theirs != digest:
                who = "another allocation" if theirs else "an interface outside tke-ipamd"
                raise ProviderRefused(f"{ip} is held by {who} ({holder['NetworkInterfaceId']})")

    async def bind(self, subnet_id: str, ip: str, node: str, owner: str) -> None:
        digest = owner_digest(owner)
        interface = await self._node_interface(node)
        eni = interface["NetworkInterfaceId"]
        if interface["SubnetId"] != subnet_id:
            raise ProviderRefused(
                f"node {node}'s interface {eni} is in subnet {interface['SubnetId']}, not {subnet_id}"
            )
        for holder in await self._holders(ip):
            theirs = tags.read(holder.get("TagSet")).get(ip_tag(ip))
            if theirs != digest:
                raise ProviderRefused(f"{ip} is not reserved for this owner: {holder['NetworkInterfaceId']} holds it")
            if holder["NetworkInterfaceId"] != eni:  # the address moves with its owner to another node
                await self._unassign(holder, ip, digest)
        assigned = [a["PrivateIpAddress"] for a in interface.get("PrivateIpAddresses", [])]
        mine = tags.read(interface.get("TagSet"))
        if ip in assigned and mine.get(ip_tag(ip)) == digest:
            return
        limit = await self.addresses_per_interface(interface.get("InstanceType", ""))
        if len(assigned) >= limit:
            raise ProviderRefused(
                f"interface {eni} of node {node} is full: instance type {interface.get('InstanceType')} allows "
                f"{limit} IPv4 addresses per interface (the primary and {limit - 1} secondary), "
                f"{len(assigned)} assigned"
            )
        if ip_tag(ip) not in mine and len(mine) >= MAX_TAGS:
            raise ProviderRefused(f"interface {eni} of node {node} is full: it has EC2's maximum of {MAX_TAGS} tags")
        await self._call(self.ec2.create_tags, Resources=[eni], Tags=[{"Key": ip_tag(ip), "Value": digest}])
        try:
            assign = self.ec2.assign_private_ip_addresses
            await self._call(assign, NetworkInterfaceId=eni, PrivateIpAddresses=[ip], AllowReassignment=False)
        except (ProviderRefused, ProviderUnavailable):
            # Another bind of the same owner (ipamd's reconcile, a retried call) may have won.
            found = await self._call(self.ec2.describe_network_interfaces, NetworkInterfaceIds=[eni])
            now = found.get("NetworkInterfaces", [{}])[0]
            if ip in {a["PrivateIpAddress"] for a in now.get("PrivateIpAddresses", [])}:
                return
            await self._untag(eni, ip, digest)
            raise

    async def release(self, subnet_id: str, ip: str, owner: str) -> None:
        digest = owner_digest(owner)
        for holder in await self._holders(ip):
            if tags.read(holder.get("TagSet")).get(ip_tag(ip)) == digest:
                await self._unassign(holder, ip, digest)

    async def _unassign(self, interface: dict[str, Any], ip: str, digest: str) -> None:
        eni = interface["NetworkInterfaceId"]
        secondary = [a["PrivateIpAddress"] for a in interface.get("PrivateIpAddresses", []) if not a.get("Primary")]
        if ip in secondary:
            await self._call(self.ec2.unassign_private_ip_addresses, NetworkInterfaceId=eni, PrivateIpAddresses=[ip])
        await self._untag(eni, ip, digest)

    async def _untag(self, eni: str, ip: str, digest: str) -> None:
        # With the value: EC2 deletes the tag only if it still holds this owner's digest.
        await self._call(self.ec2.delete_tags, Resources=[eni], Tags=[{"Key": ip_tag(ip), "Value": digest}])

    async def reconcile(self, subnet_id: str, allocations: Callable[[], Awaitable[Sequence[Assignment]]]) -> list[str]:
        """Make the subnet's interfaces agree with tke-ipamd's allocations: release what is
        tagged for an owner tke-ipamd no longer has, bind what is missing. The interfaces are
        read before the allocations (the storage decides first: a tag the later read does not
        explain belongs to an address given back). Returns what it did, one line each."""
        done = []
        interfaces = []
        params: dict[str, Any] = {"Filters": [{"Name": "subnet-id", "Values": [subnet_id]}]}
        while True:
            page = await self._call(self.ec2.describe_network_interfaces, **params)
            interfaces += page.get("NetworkInterfaces", [])
            if not page.get("NextToken"):
                break
            params["NextToken"] = page["NextToken"]
        wanted = {a.ip: a for a in await allocations()}
        held: dict[str, str] = {}  # ip -> digest, as the interfaces say
        for interface in interfaces:
            for key, digest in tags.read(interface.get("TagSet")).items():
                if not key.startswith(tags.IP_PREFIX):
                    continue
                ip = key[len(tags.IP_PREFIX) :]
                a = wanted.get(ip)
                if a is None or owner_digest(a.owner) != digest:
                    await self._unassign(interface, ip, digest)
                    done.append(f"released {ip} from {interface['NetworkInterfaceId']}: no allocation of that owner")
                else:
                    assigned = {p["PrivateIpAddress"] for p in interface.get("PrivateIpAddresses", [])}
                    if ip in assigned:
                        held[ip] = digest
        for ip, a in wanted.items():
            if ip not in held:
                try:
                    await self.bind(subnet_id, ip, a.node, a.owner)
                    done.append(f"bound {ip} to {a.node} again")
                except ProviderRefused as err:
                    done.append(f"could not bind {ip} to {a.node} again: {err}")
        return done
