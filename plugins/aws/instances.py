"""One node as an EC2 instance: its network interface first, then the instance on it.

The interface is made first (CreateNetworkInterface in the node's subnet and security
groups), so that the node's private address and name are known before the instance exists:
the kubeadm configuration in the user data names them (nodeRegistration.name, the kubelet's
node-ip), a master's address goes into the API server certificate, and a single master's
address is the cluster's endpoint. The instance is launched on that interface (device 0).

Idempotence: both are tagged as they are made (TagSpecifications) and looked up by their
tags before anything is made, so a controller that died between RunInstances and writing the
machine's status finds the instance instead of making a second one. RunInstances and
CreateNetworkInterface also carry a ClientToken derived from the object's uid, which EC2
honours for the same request retried (moto does not: the tags are what the tests rely on).

A node's name is its interface's private DNS name (ip-10-0-1-4.ec2.internal), as EC2's
default hostnames and the AWS cloud provider name nodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.plugins.aws import client, tags

# Instance states that still hold (or will hold) the machine.
ALIVE = ["pending", "running", "stopping", "stopped"]
GONE = ("shutting-down", "terminated")


def client_token(uid: str, what: str) -> str:
    """EC2's idempotency token for one request of one object (at most 64 ASCII characters)."""
    return hashlib.sha256(f"{uid}/{what}".encode()).hexdigest()[:64]


def private_dns_name(interface: Mapping[str, Any], region: str) -> str:
    """The interface's private DNS name: EC2's own, or its IP-based name by EC2's rule
    (ip-10-0-1-4.ec2.internal in us-east-1, ip-10-0-1-4.REGION.compute.internal elsewhere)."""
    name = str(interface.get("PrivateDnsName") or "")
    if name:
        return name.lower()
    ip = str(interface["PrivateIpAddress"]).replace(".", "-")
    return f"ip-{ip}.ec2.internal" if region == "us-east-1" else f"ip-{ip}.{region}.compute.internal"


def provider_id(instance: Mapping[str, Any]) -> str:
    """Kubernetes' providerID of an instance: aws:///ZONE/INSTANCE-ID."""
    zone = instance.get("Placement", {}).get("AvailabilityZone", "")
    return f"aws:///{zone}/{instance['InstanceId']}"


@dataclass(frozen=True)
class Volume:
    size_gib: int = 0
    type: str = ""
    encrypted: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    """An instance to launch on an interface."""

    instance_type: str
    image_id: str
    key_name: str = ""
    root_volume: Volume = Volume()


class Instances:
    """EC2 calls for nodes, on one client."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2

    async def find_interface(self, identity: Mapping[str, str]) -> dict[str, Any] | None:
        found = await client.step(self.ec2.describe_network_interfaces, Filters=tags.filters(identity))
        interfaces: list[dict[str, Any]] = found.get("NetworkInterfaces", [])
        return interfaces[0] if interfaces else None

    async def ensure_interface(
        self, all_tags: Mapping[str, str], subnet_id: str, groups: Sequence[str], token: str
    ) -> dict[str, Any]:
        """The node's interface, found by its tags or made (tagged as it is made)."""
        found = await self.find_interface(tags.identity(all_tags))
        if found is not None:
            return found
        params: dict[str, Any] = {
            "SubnetId": subnet_id,
            "Description": all_tags.get("Name", ""),
            "TagSpecifications": tags.specification("network-interface", all_tags),
            "ClientToken": token,
        }
        if groups:
            params["Groups"] = list(groups)
        made = await client.step(self.ec2.create_network_interface, **params)
        interface: dict[str, Any] = made["NetworkInterface"]
        return interface

    async def check_owned(self, owner: Mapping[str, str], subnets: Sequence[str], groups: Sequence[str]) -> None:
        """PermanentError unless every subnet and security group carries the `owner` tags (the
        platform's and a cluster uid's). With the platform's own identity, which serves every
        tenant, this is what makes "the cluster's subnets and groups" a rule: the ids come from
        the cluster's status, which only the platform writes unless a role a platform
        administrator wrote or an external authorizer gives a tenant update-status, and naming
        another tenant's subnet or group there would put a node into that network."""
        wanted = [("subnet", "subnet_id", sorted(set(subnets)), self.ec2.describe_subnets, "Subnets", "SubnetId")]
        wanted.append(
            ("security group", "group_id", sorted(set(groups)), self.ec2.describe_security_groups, "SecurityGroups",
             "GroupId")
        )  # fmt: skip
        for what, filter_name, ids, describe, key, id_key in wanted:
            if not ids:
                continue
            found = await client.step(describe, Filters=tags.filters(owner, **{filter_name: ids}))
            owned = {item[id_key] for item in found.get(key, [])}
            if foreign := [i for i in ids if i not in owned]:
                raise PermanentError(
                    f"{what} {', '.join(foreign)} is not this cluster's (not tagged as the platform made it for "
                    "this cluster): with the platform's AWS credentials a node goes only into its cluster's network"
                )

    async def find(self, identity: Mapping[str, str], states: Sequence[str] = ALIVE) -> list[dict[str, Any]]:
        """Instances with these tags, in these states."""
        found = await client.step(
            self.ec2.describe_instances, Filters=tags.filters(identity, instance_state_name=list(states))
        )
        return [i for r in found.get("Reservations", []) for i in r.get("Instances", [])]

    async def describe(self, instance_id: str) -> dict[str, Any] | None:
        """The instance, or None when EC2 no longer knows it."""
        try:
            found = await client.call(self.ec2.describe_instances, InstanceIds=[instance_id])
        except client.AWSError as err:
            if err.code == "InvalidInstanceID.NotFound":
                return None
            raise err.step_error() from None
        instances = [i for r in found.get("Reservations", []) for i in r.get("Instances", [])]
        return instances[0] if instances else None

    async def root_device(self, image_id: str) -> str:
        found = await client.step(self.ec2.describe_images, ImageIds=[image_id])
        images = found.get("Images", [])
        if not images:
            raise PermanentError(f"image {image_id} does not exist or is not shared with this account")
        return str(images[0].get("RootDeviceName") or "/dev/xvda")

    async def launch(
        self, spec: LaunchSpec, interface_id: str, all_tags: Mapping[str, str], user_data: bytes, token: str
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "ImageId": spec.image_id,
            "InstanceType": spec.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "UserData": user_data,  # bytes: botocore base64-encodes them
            "NetworkInterfaces": [{"DeviceIndex": 0, "NetworkInterfaceId": interface_id}],
            "TagSpecifications": [
                *tags.specification("instance", all_tags),
                *tags.specification("volume", all_tags),
            ],
            # IMDSv2 only, one hop: the node reads its metadata, its pods cannot.
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"},
            "ClientToken": token,
        }
        if spec.key_name:
            params["KeyName"] = spec.key_name
        v = spec.root_volume
        if v.size_gib or v.type or v.encrypted:
            ebs: dict[str, Any] = {"DeleteOnTermination": True, "VolumeType": v.type or "gp3", "Encrypted": v.encrypted}
            if v.size_gib:
                ebs["VolumeSize"] = v.size_gib
            params["BlockDeviceMappings"] = [{"DeviceName": await self.root_device(spec.image_id), "Ebs": ebs}]
        made = await client.step(self.ec2.run_instances, **params)
        instance: dict[str, Any] = made["Instances"][0]
        return instance

    async def terminate(self, identity: Mapping[str, str]) -> list[str]:
        """Terminate the instances with these tags; the ids of those not terminated yet."""
        alive = await self.find(identity, [*ALIVE, "shutting-down"])
        ids = [i["InstanceId"] for i in alive if i["State"]["Name"] != "shutting-down"]
        if ids:
            await client.step(self.ec2.terminate_instances, InstanceIds=ids)
        return [i["InstanceId"] for i in alive]

    async def delete_interface(self, identity: Mapping[str, str]) -> None:
        """Delete the interface with these tags (once its instance is gone)."""
        interface = await self.find_interface(identity)
        if interface is None:
            return
        if interface.get("Attachment", {}).get("Status") in ("attaching", "attached") and interface.get(
            "Attachment", {}
        ).get("InstanceId"):
            instance = await self.describe(interface["Attachment"]["InstanceId"])
            if instance is not None and instance["State"]["Name"] not in GONE:
                raise TemporaryError(f"interface {interface['NetworkInterfaceId']} is still in use", delay=5.0)
        try:
            await client.call(self.ec2.delete_network_interface, NetworkInterfaceId=interface["NetworkInterfaceId"])
        except client.AWSError as err:
            if err.code == "InvalidNetworkInterfaceID.NotFound":
                return
            if err.code == "InvalidNetworkInterface.InUse":
                raise TemporaryError(str(err), delay=5.0) from None
            raise err.step_error() from None
