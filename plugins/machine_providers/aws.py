"""The aws machine provider: a Machine of type aws is an EC2 instance that cloud-init prepares
and joins to its cluster as a worker, with the platform's join material (a bootstrap token it
stores through the cluster's API, and the pin of the cluster CA's public key), the same
kubeadm JoinConfiguration as the baremetal worker join; nobody logs in to it.

Create: CreateNetworkInterface (the node's address and name, before the instance exists),
LaunchInstance (found by its tags, or RunInstances with the user data), WaitInstanceRunning
(status from DescribeInstances: state, private and public addresses, the instance as
status.provider_id), WaitNodeReady and RecordNodeInfo (the Node, through the cluster's API).
Delete: DrainNode, DeleteNode, TerminateInstance (and wait until it is terminated),
DeleteNetworkInterface. Upgrades are replacements: an aws machine is not upgraded in place.

An instance terminated outside the platform is reported, never replaced silently: during the
create steps it fails the step for good, and once Running the health check fails (the machine
goes Failed with the reason) until someone deletes the machine.

The spec is spec.aws (AWSMachineSpec); subnet and security groups default to the cluster's
(aws clusters); the AWS credential is the machine's credential_ref, else its cluster's, else
the controller's own (option default_credentials).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator
from typing import Any

from lightkube.resources.core_v1 import Node

from tke.internal.config.loader import from_dict
from tke.internal.provider import cluster_credentials, nodeprep, nodes
from tke.internal.provider import endpoint as endpoints
from tke.internal.provider.clusterapi import ClusterAPI, admin_access
from tke.internal.provider.contract import MachineContext
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube import node_status
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import machine_pb2
from tke.plugins.aws import client, specs, tags, userdata
from tke.plugins.aws.instances import ALIVE, GONE, Instances, client_token, private_dns_name, provider_id


class AWSMachineProvider:
    name = "aws"

    def __init__(self, **options: Any) -> None:
        self.options = from_dict(specs.CommonOptions, dict(options), "options")
        self.limits = self.options.limits()
        self.clients = client.Clients(self.options.client_options())
        self.profiles = self.options.install_profiles()
        # Every step runs after the machine's AWS calls of earlier steps have ended, those of a
        # cancelled step included (client.InFlight): a delete that cancels LaunchInstance while
        # RunInstances runs in its thread looks for the instance once RunInstances has made it.
        create = [
            Step("CreateNetworkInterface", self.create_interface, description="the node's interface and address"),
            Step("LaunchInstance", self.launch, description="RunInstances with the node's cloud-init"),
            Step("WaitInstanceRunning", self.wait_running, max_retries=120, description="the instance runs"),
            Step("WaitNodeReady", self.wait_ready, max_retries=180, description="the Node is Ready"),
            Step("RecordNodeInfo", self.record_node_info, description="status.node_info and addresses, from the Node"),
        ]
        delete = [
            Step("DrainNode", self.drain, description="evict the node's pods (the Eviction API)"),
            Step("DeleteNode", self.delete_node, description="delete the Node"),
            Step("TerminateInstance", self.terminate, max_retries=120, description="terminate, wait until gone"),
            Step("DeleteNetworkInterface", self.delete_interface, max_retries=60, description="the interface"),
        ]
        in_flight = self.clients.in_flight
        self.create_steps = client.owned(in_flight, _machine_key, create)
        self.delete_steps = client.owned(in_flight, _machine_key, delete)
        self.scale_steps: list[Step[MachineContext]] = []
        self.upgrade_steps = client.owned(in_flight, _machine_key, [Step("ReplaceToUpgrade", self.replace_to_upgrade)])

    # -- validation ---------------------------------------------------------------------------

    def validate(self, machine: machine_pb2.Machine) -> list[FieldViolation]:
        spec = machine.spec
        if not spec.HasField("aws"):
            return [FieldViolation("machine.spec.aws", "is required for an aws machine: instance type, image, ...")]
        out = specs.machine_violations(spec.aws, "machine.spec.aws", self.limits)
        if spec.ip:
            out.append(FieldViolation("machine.spec.ip", "must be empty: EC2 gives the instance its address"))
        if spec.role == machine_pb2.MACHINE_ROLE_MASTER:
            out.append(FieldViolation("machine.spec.role", "an aws cluster's masters are its spec.aws.control_plane"))
        return out

    def validate_update(self, before: machine_pb2.Machine, after: machine_pb2.Machine) -> list[FieldViolation]:
        """The account (spec.credential_ref) of the machine's instance and interface cannot change
        once they are being made (the cluster's region and credential cannot either): the delete
        steps find them by their tags in that account."""
        if not specs.started(before.status):
            return []
        what = "the machine's instance and network interface"
        return specs.moved("machine.spec.credential_ref", before.spec.credential_ref, after.spec.credential_ref, what)

    # -- helpers ------------------------------------------------------------------------------

    def _check_limits(self, ctx: MachineContext) -> None:
        """The operator's limits, checked again with this controller's options before a step
        makes anything in EC2: the machine may have been stored before a limit was set, or by an
        apiserver configured otherwise."""
        violations = self.limits.violations(ctx.machine.spec.aws, "machine.spec.aws")
        if violations:
            raise PermanentError("; ".join(f"{v.field}: {v.description}" for v in violations))

    def _credential_ref(self, ctx: MachineContext) -> str:
        ref = ctx.machine.spec.credential_ref or ctx.cluster.spec.credential_ref
        if not ref and not self.options.default_credentials:
            raise PermanentError("an AWS credential is required: set spec.credential_ref (or the cluster's)")
        return ref

    def _region(self, ctx: MachineContext) -> str:
        c = ctx.cluster
        return c.status.aws.region or c.spec.aws.region or self.options.region

    def _instances(self, ctx: MachineContext) -> Instances:
        credential = client.credential_for(ctx.tools.credentials, self._credential_ref(ctx))
        return Instances(self.clients.get("ec2", region=self._region(ctx), credential=credential))

    def _tags(self, ctx: MachineContext) -> dict[str, str]:
        c, m = ctx.cluster.metadata, ctx.machine.metadata
        return tags.of(
            self.options.platform,
            m.tenant_id,
            c.name,
            c.uid,
            "worker",
            **{tags.MACHINE: m.name, tags.MACHINE_UID: m.uid},
        )

    def _identity(self, ctx: MachineContext) -> dict[str, str]:
        return tags.identity(self._tags(ctx))

    def _placement(self, ctx: MachineContext) -> tuple[str, list[str]]:
        spec, cluster = ctx.machine.spec.aws, ctx.cluster.status.aws
        if not self._credential_ref(ctx):
            # The platform's own AWS identity serves every tenant: with it a machine goes only
            # where its cluster is, never into a subnet or group of someone else's.
            if spec.subnet_id and spec.subnet_id not in {s.id for s in cluster.subnets}:
                raise PermanentError(
                    "with the platform's AWS credentials a machine uses its cluster's subnets only; "
                    "name the tenant's credential (spec.credential_ref) to choose another"
                )
            if any(g != cluster.node_security_group_id for g in spec.security_group_ids):
                raise PermanentError(
                    "with the platform's AWS credentials a machine uses its cluster's node security group only"
                )
        subnet = spec.subnet_id
        if not subnet and cluster.subnets:
            # Spread over the cluster's subnets (zones), the same subnet for the same machine.
            subnet = cluster.subnets[zlib.crc32(ctx.machine.metadata.name.encode()) % len(cluster.subnets)].id
        groups = list(spec.security_group_ids) or (
            [cluster.node_security_group_id] if cluster.node_security_group_id else []
        )
        if not subnet:
            raise PermanentError("machine.spec.aws.subnet_id is required: the cluster has no AWS subnets")
        return subnet, groups

    def _address(self, ctx: MachineContext, kind: str) -> str:
        return next((a.address for a in ctx.machine.status.addresses if a.type == kind), "")

    def _node_name(self, ctx: MachineContext) -> str:
        name = self._address(ctx, "Hostname")
        if not name:
            raise TemporaryError("the machine has no node name yet (its interface is not made)")
        return name

    @contextlib.asynccontextmanager
    async def _api(self, ctx: MachineContext) -> AsyncIterator[ClusterAPI]:
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        access = admin_access(endpoints.of(ctx.cluster).url, cas.ca, ctx.cluster.spec.version)
        async with ctx.tools.cluster_apis.connect(access) as api:
            yield api

    def _vanished(self, instance_id: str, instance: dict[str, Any] | None) -> PermanentError:
        if instance is None:
            return PermanentError(f"instance {instance_id} is gone: it was terminated outside the platform")
        reason = instance.get("StateTransitionReason") or instance.get("StateReason", {}).get("Message", "")
        return PermanentError(
            f"instance {instance_id} is {instance['State']['Name']}: it was terminated outside the platform"
            + (f" ({reason})" if reason else "")
            + "; delete the machine (it is not recreated silently)"
        )

    # -- create -------------------------------------------------------------------------------

    async def create_interface(self, ctx: MachineContext) -> None:
        self._check_limits(ctx)
        subnet, groups = self._placement(ctx)
        instances = self._instances(ctx)
        if not self._credential_ref(ctx):
            owner = {tags.PLATFORM: self.options.platform, tags.CLUSTER_UID: ctx.cluster.metadata.uid}
            await instances.check_owned(owner, [subnet], groups)
        interface = await instances.ensure_interface(
            self._tags(ctx), subnet, groups, client_token(ctx.machine.metadata.uid, "interface")
        )
        status = ctx.obj.status
        del status.addresses[:]
        status.addresses.add(type="InternalIP", address=interface["PrivateIpAddress"])
        status.addresses.add(type="Hostname", address=private_dns_name(interface, self._region(ctx)))

    async def _user_data(self, ctx: MachineContext, name: str, ip: str) -> bytes:
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        token = nodes.new_bootstrap_token()
        async with self._api(ctx) as api:
            await api.create_bootstrap_token(
                token, self.options.bootstrap_token_ttl, f"tke: join worker {ctx.machine.metadata.name}"
            )
        m = ctx.machine
        profile = nodeprep.choose(self.profiles, ctx.cluster.spec.install_profile, ctx.cluster.metadata.tenant_id)
        taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in m.spec.taints]
        ignore = ["Swap"] if profile.swap == "kubelet" else []
        node = kubecfg.Node(name, ip, dict(m.spec.labels), taints, ignore_preflight_errors=ignore)
        paths = nodes.Paths()
        bootstrap = userdata.NodeBootstrap(
            env=nodes.environment(ctx.cluster, paths, node_ip=ip, node_name=name, role="worker"),
            profile=profile,
            version=ctx.cluster.status.version or ctx.cluster.spec.version,
            kubeadm_config=nodes.join_documents(ctx.cluster, node, token, cas.ca.pair.cert_pem, paths.pki_dir),
            kubeadm="join",
        )
        return userdata.pack(bootstrap.document())

    async def launch(self, ctx: MachineContext) -> None:
        instances = self._instances(ctx)
        found = await instances.find(self._identity(ctx), [*ALIVE, *GONE])
        alive = [i for i in found if i["State"]["Name"] in ALIVE]
        if alive:
            ctx.obj.status.provider_id = provider_id(alive[0])
            return
        if found:
            raise self._vanished(found[0]["InstanceId"], found[0])
        self._check_limits(ctx)
        interface = await instances.find_interface(self._identity(ctx))
        if interface is None:
            raise TemporaryError("the machine's network interface is gone; it is made again first")
        name, ip = self._node_name(ctx), interface["PrivateIpAddress"]
        instance = await instances.launch(
            specs.launch_spec(ctx.machine.spec.aws),
            interface["NetworkInterfaceId"],
            self._tags(ctx),
            await self._user_data(ctx, name, ip),
            client_token(ctx.machine.metadata.uid, "instance"),
        )
        ctx.obj.status.provider_id = provider_id(instance)

    def _instance_id(self, ctx: MachineContext) -> str:
        return ctx.machine.status.provider_id.rsplit("/", 1)[-1]

    async def _described(self, ctx: MachineContext) -> tuple[str, dict[str, Any] | None]:
        """The instance status.provider_id names, if it is this machine's: status is the platform's to
        write, but a role a platform administrator wrote or an external authorizer may give a
        tenant update-status, and another instance's addresses and state must not be read into it."""
        instance_id = self._instance_id(ctx)
        instance = await self._instances(ctx).describe(instance_id)
        if instance is not None and tags.read(instance.get("Tags")).get(tags.MACHINE_UID) != ctx.machine.metadata.uid:
            raise PermanentError(f"instance {instance_id} (status.provider_id) is not this machine's")
        return instance_id, instance

    async def wait_running(self, ctx: MachineContext) -> None:
        instance_id, instance = await self._described(ctx)
        state = instance["State"]["Name"] if instance else "gone"
        if instance is None or state in GONE:
            raise self._vanished(instance_id, instance)
        if state != "running":
            raise TemporaryError(f"instance {instance_id} is {state}", delay=5.0)
        record_instance(instance, ctx.obj.status)

    async def _node(self, ctx: MachineContext) -> Node:
        name = self._node_name(ctx)
        async with self._api(ctx) as api:
            node = await api.node(name)
        if node is None:
            raise TemporaryError(f"node {name} is not registered yet (cloud-init is preparing it)", delay=10.0)
        return node

    async def wait_ready(self, ctx: MachineContext) -> None:
        report = node_status.report(await self._node(ctx))
        if not report.ready:
            raise TemporaryError(f"node {report.name} is not Ready yet: {report.ready_reason}", delay=5.0)

    async def record_node_info(self, ctx: MachineContext) -> None:
        public = self._address(ctx, "ExternalIP")
        node_status.write_machine_status(await self._node(ctx), ctx.obj.status)
        if public and not self._address(ctx, "ExternalIP"):
            ctx.obj.status.addresses.add(type="ExternalIP", address=public)

    # -- delete -------------------------------------------------------------------------------

    def _joined(self, ctx: MachineContext) -> bool:
        return bool(ctx.machine.status.provider_id) and bool(ctx.cluster.status.control_plane_endpoint)

    async def drain(self, ctx: MachineContext) -> None:
        if not self._joined(ctx) or not self._address(ctx, "Hostname"):
            return
        async with self._api(ctx) as api:
            await api.drain(self._node_name(ctx), self.options.drain_timeout)

    async def delete_node(self, ctx: MachineContext) -> None:
        if not self._joined(ctx) or not self._address(ctx, "Hostname"):
            return
        async with self._api(ctx) as api:
            await api.delete_node(self._node_name(ctx))

    async def terminate(self, ctx: MachineContext) -> None:
        pending = await self._instances(ctx).terminate(self._identity(ctx))
        if pending:
            raise TemporaryError(f"instance {', '.join(pending)} is shutting down", delay=5.0)

    async def delete_interface(self, ctx: MachineContext) -> None:
        await self._instances(ctx).delete_interface(self._identity(ctx))

    async def replace_to_upgrade(self, ctx: MachineContext) -> None:
        raise PermanentError(
            "aws machines are not upgraded in place: delete the machine and create it again, and it joins "
            f"with the cluster's version {ctx.cluster.status.version}"
        )

    # -- health -------------------------------------------------------------------------------

    async def check_health(self, ctx: MachineContext) -> str:
        instance_id, instance = await self._described(ctx)
        if instance is None or instance["State"]["Name"] in GONE:
            raise TemporaryError(str(self._vanished(instance_id, instance)))
        await self.wait_ready(ctx)
        return f"instance {instance_id} {instance['State']['Name']}, node Ready"


def _machine_key(ctx: MachineContext) -> str:
    m = ctx.machine.metadata
    return f"machine {m.tenant_id}/{m.name} ({m.uid})"


def record_instance(instance: dict[str, Any], status: machine_pb2.MachineStatus) -> None:
    """status.addresses and provider_id from DescribeInstances."""
    status.provider_id = provider_id(instance)
    name = next((a.address for a in status.addresses if a.type == "Hostname"), "")
    del status.addresses[:]
    status.addresses.add(type="InternalIP", address=instance["PrivateIpAddress"])
    if instance.get("PublicIpAddress"):
        status.addresses.add(type="ExternalIP", address=instance["PublicIpAddress"])
    status.addresses.add(type="Hostname", address=name or str(instance.get("PrivateDnsName", "")).lower())
