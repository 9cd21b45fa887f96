"""A cluster's AWS network: the VPC, a subnet per zone, an internet gateway with a default route
(only when asked), a security group for the control plane and one for the nodes, and the
network load balancer in front of the API servers (when asked).

Each `ensure_*` finds what the platform made by its tags (tags.py) or makes it, tagged as it
is made, so a step that died half-way and runs again makes nothing twice. Adopted resources
(ids in the spec) are only read. `delete_*` removes only what carries this cluster's uid,
in dependency order: the load balancer before its target group, security group rules that
name the other group before either group, the route table's association, the gateway's
attachment, the subnets, then the VPC. A dependency AWS still reports (an interface of the
load balancer being released) is a TemporaryError: the step runs again later.

Security groups, with intra-group traffic allowed in each:
- control plane: 6443 (the API) from anywhere, 2379-2380 (etcd), 10250 (kubelet), 10257
  (controller-manager), 10259 (scheduler) from the control plane; everything from the nodes
  (the pod network);
- nodes: 10250 from the control plane, 30000-32767 (NodePorts) from anywhere; everything from
  the control plane (the pod network).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.plugins.aws import client, tags

ANYWHERE = "0.0.0.0/0"
API_PORT = 6443


@dataclass(frozen=True)
class Rule:
    """An ingress rule: a TCP port range (or every protocol) from a CIDR or a group."""

    from_port: int = -1
    to_port: int = -1
    cidr: str = ""
    group: str = ""  # "control-plane" or "nodes": the cluster's groups
    all_protocols: bool = False

    def permission(self, groups: Mapping[str, str]) -> dict[str, Any]:
        p: dict[str, Any] = {"IpProtocol": "-1"} if self.all_protocols else {"IpProtocol": "tcp"}
        if not self.all_protocols:
            p["FromPort"], p["ToPort"] = self.from_port, self.to_port
        if self.cidr:
            p["IpRanges"] = [{"CidrIp": self.cidr}]
        else:
            p["UserIdGroupPairs"] = [{"GroupId": groups[self.group]}]
        return p


CONTROL_PLANE_RULES = (
    Rule(API_PORT, API_PORT, cidr=ANYWHERE),
    Rule(2379, 2380, group="control-plane"),
    Rule(10250, 10250, group="control-plane"),
    Rule(10257, 10257, group="control-plane"),
    Rule(10259, 10259, group="control-plane"),
    Rule(group="control-plane", all_protocols=True),
    Rule(group="nodes", all_protocols=True),
)
NODE_RULES = (
    Rule(10250, 10250, group="control-plane"),
    Rule(30000, 32767, cidr=ANYWHERE),
    Rule(group="nodes", all_protocols=True),
    Rule(group="control-plane", all_protocols=True),
)


@dataclass(frozen=True)
class SubnetWanted:
    id: str = ""
    zone: str = ""
    cidr: str = ""


def load_balancer_name(cluster_uid: str, suffix: str = "") -> str:
    """ELBv2 names: at most 32 letters, digits and hyphens, unique per account and region."""
    return f"tke-{hashlib.sha256(cluster_uid.encode()).hexdigest()[:24]}{suffix}"[:32]


class Network:
    """EC2 and ELBv2 calls for one cluster's network. `base` are the cluster's tags (tags.of
    with an empty role); each resource gets its role."""

    def __init__(self, ec2: Any, elb: Any, base: Mapping[str, str]) -> None:
        self.ec2 = ec2
        self.elb = elb
        self.base = dict(base)

    def _tags(self, role: str, **more: str) -> dict[str, str]:
        out = {**self.base, tags.ROLE: role, **more}
        out["Name"] = f"{self.base[tags.CLUSTER]}-{role}" + (f"-{more['tke.cloud/zone']}" if more else "")
        return out

    def _identity(self, role: str) -> dict[str, str]:
        return tags.identity(self._tags(role))

    async def _find(self, describe: Any, key: str, role: str) -> list[dict[str, Any]]:
        found = await client.step(describe, Filters=tags.filters(self._identity(role)))
        items: list[dict[str, Any]] = found.get(key, [])
        return items

    # -- VPC and subnets ------------------------------------------------------------------------

    async def ensure_vpc(self, vpc_id: str, cidr: str) -> str:
        if vpc_id:
            found = await client.step(self.ec2.describe_vpcs, VpcIds=[vpc_id])
            if not found.get("Vpcs"):
                raise PermanentError(f"VPC {vpc_id} does not exist")
            return vpc_id
        mine = await self._find(self.ec2.describe_vpcs, "Vpcs", "vpc")
        if mine:
            return str(mine[0]["VpcId"])
        made = await client.step(
            self.ec2.create_vpc, CidrBlock=cidr, TagSpecifications=tags.specification("vpc", self._tags("vpc"))
        )
        return str(made["Vpc"]["VpcId"])

    async def ensure_subnets(self, vpc_id: str, wanted: Sequence[SubnetWanted]) -> list[dict[str, str]]:
        """The subnets in spec order, as {id, zone, cidr}."""
        adopted = [w.id for w in wanted if w.id]
        by_id: dict[str, dict[str, Any]] = {}
        if adopted:
            found = await client.step(self.ec2.describe_subnets, SubnetIds=adopted)
            by_id = {s["SubnetId"]: s for s in found.get("Subnets", [])}
        mine = {
            (s["AvailabilityZone"], s["CidrBlock"]): s
            for s in await self._find(self.ec2.describe_subnets, "Subnets", "subnet")
        }
        out = []
        for w in wanted:
            if w.id:
                s = by_id.get(w.id)
                if s is None:
                    raise PermanentError(f"subnet {w.id} does not exist")
                if s["VpcId"] != vpc_id:
                    raise PermanentError(f"subnet {w.id} is not in VPC {vpc_id}")
            elif (w.zone, w.cidr) in mine:
                s = mine[(w.zone, w.cidr)]
            else:
                made = await client.step(
                    self.ec2.create_subnet,
                    VpcId=vpc_id,
                    CidrBlock=w.cidr,
                    AvailabilityZone=w.zone,
                    TagSpecifications=tags.specification("subnet", self._tags("subnet", **{"tke.cloud/zone": w.zone})),
                )
                s = made["Subnet"]
            out.append({"id": s["SubnetId"], "zone": s["AvailabilityZone"], "cidr": s["CidrBlock"]})
        return out

    async def ensure_internet_route(self, vpc_id: str, subnet_ids: Sequence[str]) -> None:
        """An internet gateway attached to the VPC, and a route table with a default route to it
        associated with the subnets."""
        gateways = await self._find(self.ec2.describe_internet_gateways, "InternetGateways", "internet-gateway")
        if gateways:
            gateway = gateways[0]
        else:
            made = await client.step(
                self.ec2.create_internet_gateway,
                TagSpecifications=tags.specification("internet-gateway", self._tags("internet-gateway")),
            )
            gateway = made["InternetGateway"]
        gateway_id = gateway["InternetGatewayId"]
        if not any(a.get("VpcId") == vpc_id for a in gateway.get("Attachments", [])):
            await client.step(self.ec2.attach_internet_gateway, InternetGatewayId=gateway_id, VpcId=vpc_id)
        tables = await self._find(self.ec2.describe_route_tables, "RouteTables", "route-table")
        if tables:
            table = tables[0]
        else:
            made = await client.step(
                self.ec2.create_route_table,
                VpcId=vpc_id,
                TagSpecifications=tags.specification("route-table", self._tags("route-table")),
            )
            table = made["RouteTable"]
        table_id = table["RouteTableId"]
        if not any(r.get("DestinationCidrBlock") == ANYWHERE for r in table.get("Routes", [])):
            await client.step(
                self.ec2.create_route, RouteTableId=table_id, DestinationCidrBlock=ANYWHERE, GatewayId=gateway_id
            )
        associated = {a.get("SubnetId") for a in table.get("Associations", [])}
        for subnet_id in subnet_ids:
            if subnet_id not in associated:
                await client.step(self.ec2.associate_route_table, RouteTableId=table_id, SubnetId=subnet_id)

    # -- security groups ------------------------------------------------------------------------

    async def ensure_security_groups(self, vpc_id: str, cluster: str) -> dict[str, str]:
        """The cluster's two groups, with their rules: {"control-plane": id, "nodes": id}."""
        groups: dict[str, str] = {}
        for key, role in (("control-plane", "control-plane-sg"), ("nodes", "node-sg")):
            mine = await self._find(self.ec2.describe_security_groups, "SecurityGroups", role)
            if mine:
                groups[key] = mine[0]["GroupId"]
                continue
            made = await client.step(
                self.ec2.create_security_group,
                GroupName=f"{self.base[tags.CLUSTER]}-{role}-{self.base[tags.CLUSTER_UID][:8]}",
                Description=f"tke: cluster {cluster}, {key}",
                VpcId=vpc_id,
                TagSpecifications=tags.specification("security-group", self._tags(role)),
            )
            groups[key] = made["GroupId"]
        for key, rules in (("control-plane", CONTROL_PLANE_RULES), ("nodes", NODE_RULES)):
            for rule in rules:
                try:
                    await client.call(
                        self.ec2.authorize_security_group_ingress,
                        GroupId=groups[key],
                        IpPermissions=[rule.permission(groups)],
                    )
                except client.AWSError as err:
                    if err.code != "InvalidPermission.Duplicate":
                        raise err.step_error() from None
        return groups

    # -- the load balancer ----------------------------------------------------------------------

    async def _load_balancer(self) -> dict[str, Any] | None:
        try:
            found = await client.call(
                self.elb.describe_load_balancers, Names=[load_balancer_name(self.base[tags.CLUSTER_UID])]
            )
        except client.AWSError as err:
            if err.code == "LoadBalancerNotFound":
                return None
            raise err.step_error() from None
        lbs: list[dict[str, Any]] = found.get("LoadBalancers", [])
        return lbs[0] if lbs else None

    async def _target_group(self) -> dict[str, Any] | None:
        try:
            found = await client.call(
                self.elb.describe_target_groups, Names=[load_balancer_name(self.base[tags.CLUSTER_UID], "-api")]
            )
        except client.AWSError as err:
            if err.code == "TargetGroupNotFound":
                return None
            raise err.step_error() from None
        groups: list[dict[str, Any]] = found.get("TargetGroups", [])
        return groups[0] if groups else None

    async def ensure_load_balancer(
        self, vpc_id: str, subnet_ids: Sequence[str], security_group: str, *, public: bool, targets: Sequence[str]
    ) -> tuple[str, str]:
        """A network load balancer forwarding TCP 6443 to the masters' addresses (targets):
        (ARN, DNS name)."""
        uid = self.base[tags.CLUSTER_UID]
        elb_tags = tags.aws(self._tags("load-balancer"))
        lb = await self._load_balancer()
        if lb is None:
            made = await client.step(
                self.elb.create_load_balancer,
                Name=load_balancer_name(uid),
                Subnets=list(subnet_ids),
                Scheme="internet-facing" if public else "internal",
                Type="network",
                SecurityGroups=[security_group],
                Tags=elb_tags,
            )
            lb = made["LoadBalancers"][0]
        tg = await self._target_group()
        if tg is None:
            made = await client.step(
                self.elb.create_target_group,
                Name=load_balancer_name(uid, "-api"),
                Protocol="TCP",
                Port=API_PORT,
                VpcId=vpc_id,
                TargetType="ip",
                HealthCheckProtocol="TCP",
                Tags=tags.aws(self._tags("target-group")),
            )
            tg = made["TargetGroups"][0]
        listeners = await client.step(self.elb.describe_listeners, LoadBalancerArn=lb["LoadBalancerArn"])
        if not any(x.get("Port") == API_PORT for x in listeners.get("Listeners", [])):
            await client.step(
                self.elb.create_listener,
                LoadBalancerArn=lb["LoadBalancerArn"],
                Protocol="TCP",
                Port=API_PORT,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
            )
        if targets:
            await client.step(
                self.elb.register_targets,
                TargetGroupArn=tg["TargetGroupArn"],
                Targets=[{"Id": ip, "Port": API_PORT} for ip in targets],
            )
        return str(lb["LoadBalancerArn"]), str(lb["DNSName"])

    async def delete_load_balancer(self) -> None:
        lb = await self._load_balancer()
        if lb is not None:
            await client.step(self.elb.delete_load_balancer, LoadBalancerArn=lb["LoadBalancerArn"])
            raise TemporaryError(f"load balancer {lb['LoadBalancerName']} is being deleted", delay=2.0)
        tg = await self._target_group()
        if tg is not None:
            try:
                await client.call(self.elb.delete_target_group, TargetGroupArn=tg["TargetGroupArn"])
            except client.AWSError as err:
                if err.code == "ResourceInUse":
                    raise TemporaryError(str(err), delay=5.0) from None
                raise err.step_error() from None

    # -- delete ---------------------------------------------------------------------------------

    async def _delete(self, method: Any, **params: Any) -> None:
        """Delete one resource: gone already is done, a dependency still there is temporary."""
        try:
            await client.call(method, **params)
        except client.AWSError as err:
            if err.code.endswith(".NotFound") or err.code.endswith("NotFound"):
                return
            if err.code in ("DependencyViolation", "InvalidGroup.InUse", "ResourceInUse", "Gateway.NotAttached"):
                raise TemporaryError(str(err), delay=5.0) from None
            raise err.step_error() from None

    async def delete_network(self) -> None:
        """Everything this cluster's uid made, in dependency order (not adopted resources)."""
        groups = [
            g
            for role in ("control-plane-sg", "node-sg")
            for g in await self._find(self.ec2.describe_security_groups, "SecurityGroups", role)
        ]
        for g in groups:  # rules naming the other group first: a referenced group cannot go
            if g.get("IpPermissions"):
                await client.step(
                    self.ec2.revoke_security_group_ingress, GroupId=g["GroupId"], IpPermissions=g["IpPermissions"]
                )
        for g in groups:
            await self._delete(self.ec2.delete_security_group, GroupId=g["GroupId"])
        for table in await self._find(self.ec2.describe_route_tables, "RouteTables", "route-table"):
            for a in table.get("Associations", []):
                if not a.get("Main"):
                    await self._delete(self.ec2.disassociate_route_table, AssociationId=a["RouteTableAssociationId"])
            await self._delete(self.ec2.delete_route_table, RouteTableId=table["RouteTableId"])
        for gw in await self._find(self.ec2.describe_internet_gateways, "InternetGateways", "internet-gateway"):
            for a in gw.get("Attachments", []):
                await self._delete(
                    self.ec2.detach_internet_gateway, InternetGatewayId=gw["InternetGatewayId"], VpcId=a["VpcId"]
                )
            await self._delete(self.ec2.delete_internet_gateway, InternetGatewayId=gw["InternetGatewayId"])
        for s in await self._find(self.ec2.describe_subnets, "Subnets", "subnet"):
            await self._delete(self.ec2.delete_subnet, SubnetId=s["SubnetId"])
        for v in await self._find(self.ec2.describe_vpcs, "Vpcs", "vpc"):
            await self._delete(self.ec2.delete_vpc, VpcId=v["VpcId"])
