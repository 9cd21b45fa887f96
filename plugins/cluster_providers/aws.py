"""The aws cluster provider: a Kubernetes cluster on EC2, installed by kubeadm through
cloud-init, the way the baremetal provider installs one over SSH.

Create steps:
- EnsureNetwork: the VPC, a subnet per zone, an internet gateway and default route (when
  asked), the control plane's and the nodes' security groups; created, or adopted when the
  spec names them (plugins/aws/network.py). Recorded in status.aws.
- EnsureClusterCredential: the cluster's CAs and service-account keys, kept by the platform.
- EnsureControlPlaneInterfaces: each master's network interface, so that every master's
  address and node name are known before any instance boots.
- EnsureEndpoint: the control-plane endpoint, recorded once in status: a network load
  balancer (ELBv2) forwarding TCP 6443 to the masters' addresses, the operator's
  spec.control_plane_endpoint, or the single master's address.
- LaunchFirstControlPlane: the first master, whose cloud-init writes the cluster's CAs and
  runs `kubeadm init` (the same documents as baremetal's init).
- WaitAPIReady: the API server answers /readyz through the endpoint.
- AddonsReady: the network add-on (tke.internal.provider.addons) server-side applied through
  the cluster's API and rolled out, as the baremetal provider does; applied again, changing
  nothing unless the platform's add-on changed, by ScaleAddonsReady after a spec change. Here,
  right after init, as kubeadm's high-availability guide applies the pod network: a kubelet
  reports its Node NotReady until a CNI configuration is on the node, so waiting for Ready
  masters first would wait forever (tke-cni's pods run on the host network and tolerate every
  taint: they start on a NotReady node and make it Ready). With tke-ipamd, every master's
  cloud-init writes kube-scheduler's configuration naming its extender, and the first master's
  ClusterConfiguration mounts it: a control-plane join makes its kube-scheduler from that
  stored ClusterConfiguration.
- LaunchControlPlanes: the other masters, whose cloud-init joins them as control-plane
  members with a bootstrap token the platform stored through the API.
- WaitControlPlaneNodes: every master's Node is Ready; status.control_plane lists them.
- RecordAddresses.
Delete (after the cluster's Machines are gone): TerminateControlPlane, DeleteControlPlane-
Interfaces, DeleteLoadBalancer, DeleteNetwork (only what this cluster made), then the
cluster's credential. Everything is found by its tags (plugins/aws/tags.py), so a step cut off
half-way and run again by a restarted controller finds what it made. Upgrades and changing the
number of masters in place are not supported: the spec refuses them once installed.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

from tke.internal.config.loader import from_dict
from tke.internal.provider import cluster_credentials, nodeprep, nodes
from tke.internal.provider import endpoint as endpoints
from tke.internal.provider.addons import network, rollout
from tke.internal.provider.clusterapi import ClusterAPI, admin_access
from tke.internal.provider.contract import ClusterContext
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube import node_status
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import cluster_pb2
from tke.plugins.aws import client, specs, tags, userdata
from tke.plugins.aws.instances import ALIVE, GONE, Instances, client_token, private_dns_name
from tke.plugins.aws.network import API_PORT, Network, SubnetWanted

DEFAULT_VPC_CIDR = "10.0.0.0/16"
MASTER_COUNTS = (1, 3, 5)


class AWSClusterProvider:
    name = "aws"

    def __init__(self, **options: Any) -> None:
        self.options = from_dict(specs.ClusterOptions, dict(options), "options")
        self.limits = self.options.limits()
        self.network = network.options_from(self.options.network_addon)
        self.clients = client.Clients(self.options.client_options())
        self.profiles = self.options.install_profiles()
        # Every step runs after the cluster's AWS calls of earlier steps have ended, those of a
        # cancelled step included (client.InFlight): a delete that cancels a step while its
        # CreateVpc or RunInstances runs in a thread looks for what it makes once it exists.
        create = [
            Step("EnsureNetwork", self.ensure_network, description="VPC, subnets, gateway, security groups"),
            Step(
                "EnsureClusterCredential", self.ensure_credential, description="the cluster's CAs, kept by the platform"
            ),
            Step("EnsureControlPlaneInterfaces", self.ensure_interfaces, description="the masters' addresses"),
            Step("EnsureEndpoint", self.ensure_endpoint, description="the load balancer, or the first master"),
            Step("LaunchFirstControlPlane", self.launch_first, description="the first master: kubeadm init"),
            Step("WaitAPIReady", self.wait_ready, max_retries=180, description="the API server is ready"),
            Step("AddonsReady", self.addons, max_retries=120, description="the network add-on applied and rolled out"),
            Step("LaunchControlPlanes", self.launch_others, description="the other masters: kubeadm join"),
            Step("WaitControlPlaneNodes", self.wait_masters, max_retries=180, description="every master is Ready"),
            Step("RecordAddresses", self.record_addresses, description="status.addresses"),
        ]
        delete = [
            Step("TerminateControlPlane", self.terminate, max_retries=120, description="the masters' instances"),
            Step("DeleteControlPlaneInterfaces", self.delete_interfaces, max_retries=60),
            Step("DeleteLoadBalancer", self.delete_load_balancer, max_retries=60),
            Step("DeleteNetwork", self.delete_network, max_retries=120, description="only what the platform made"),
            Step("DeleteClusterCredential", self.delete_credential),
        ]
        # A spec change applies the add-on again (the control plane's size cannot change).
        scale = [Step("ScaleAddonsReady", self.addons, max_retries=120)]
        in_flight = self.clients.in_flight
        self.create_steps = client.owned(in_flight, _cluster_key, create)
        self.delete_steps = client.owned(in_flight, _cluster_key, delete)
        self.scale_steps = client.owned(in_flight, _cluster_key, scale)
        self.upgrade_steps: list[Step[ClusterContext]] = []

    # -- validation ---------------------------------------------------------------------------

    def validate(self, cluster: cluster_pb2.Cluster) -> list[FieldViolation]:
        spec, path = cluster.spec, "cluster.spec.aws"
        out: list[FieldViolation] = []
        if not spec.network.pod_cidr or not spec.network.service_cidr:
            out.append(FieldViolation("cluster.spec.network", "pod_cidr and service_cidr are required"))
        try:
            if kubecfg.minor(spec.version) < (1, 29):
                out.append(FieldViolation("cluster.spec.version", "must be 1.29 or later"))
        except (ValueError, IndexError):
            out.append(FieldViolation("cluster.spec.version", "is required: a Kubernetes version such as 1.31.2"))
        if spec.machines:
            out.append(FieldViolation("cluster.spec.machines", "must be empty: the masters are spec.aws.control_plane"))
        if err := nodeprep.profile_violation(self.profiles, spec.install_profile, cluster.metadata.tenant_id):
            out.append(FieldViolation("cluster.spec.install_profile", err))
        if spec.HasField("control_plane_vip") and spec.control_plane_vip.address:
            out.append(
                FieldViolation("cluster.spec.control_plane_vip", "VRRP does not work in a VPC: use load_balancer")
            )
        if not spec.HasField("aws"):
            return [*out, FieldViolation(path, "is required for an aws cluster: subnets and control plane")]
        aws = spec.aws
        if err := specs.region_error(aws.region):
            out.append(FieldViolation(f"{path}.region", err))
        out += self._network_violations(aws, path)
        cp = aws.control_plane
        if cp.count not in MASTER_COUNTS:
            out.append(FieldViolation(f"{path}.control_plane.count", "must be 1, 3 or 5"))
        elif cp.count > self.options.max_control_plane_count:
            out.append(
                FieldViolation(
                    f"{path}.control_plane.count",
                    f"{cp.count} masters are more than allowed here: at most {self.options.max_control_plane_count} "
                    "(aws option max_control_plane_count)",
                )
            )
        if aws.load_balancer and not self.options.allow_load_balancer:
            out.append(
                FieldViolation(
                    f"{path}.load_balancer",
                    "a load balancer is not allowed here (aws option allow_load_balancer): one master, or your "
                    "own control_plane_endpoint",
                )
            )
        own_endpoint = spec.HasField("control_plane_endpoint") and bool(spec.control_plane_endpoint.host)
        if cp.count > 1 and not aws.load_balancer and not own_endpoint:
            out.append(
                FieldViolation(
                    f"{path}.load_balancer",
                    "several masters need an endpoint in front of them: load_balancer, or control_plane_endpoint",
                )
            )
        if aws.load_balancer and own_endpoint:
            out.append(FieldViolation(f"{path}.load_balancer", "set load_balancer or control_plane_endpoint, not both"))
        if aws.load_balancer_public and not aws.load_balancer:
            out.append(FieldViolation(f"{path}.load_balancer_public", "needs load_balancer"))
        out += specs.machine_violations(cp.machine, f"{path}.control_plane.machine", self.limits, placement=False)
        status = cluster.status
        if status.control_plane_endpoint or status.control_plane:
            if status.version and spec.version.lstrip("v") != status.version.lstrip("v"):
                out.append(FieldViolation("cluster.spec.version", "aws clusters are not upgraded in place yet"))
            if status.control_plane and cp.count != len(status.control_plane):
                out.append(FieldViolation(f"{path}.control_plane.count", "cannot change once the cluster is installed"))
        return out

    def validate_update(self, before: cluster_pb2.Cluster, after: cluster_pb2.Cluster) -> list[FieldViolation]:
        """The account (spec.credential_ref) and the region of the cluster's VPC, load balancer and
        masters cannot change once they are being made: the delete steps find them by their tags
        in that account and region, and a teardown that looked elsewhere found nothing, succeeded,
        and left them running (in the platform's account, billed to the operator)."""
        if not specs.started(before.status):
            return []
        what = "the cluster's VPC, load balancer and masters"
        out = specs.moved("cluster.spec.credential_ref", before.spec.credential_ref, after.spec.credential_ref, what)
        if after.spec.aws.region != before.spec.aws.region:
            # Only a change of the field: this apiserver's default region may not be the
            # controller's. Where it was made is what EnsureNetwork recorded, when it did.
            made = before.status.aws.region or before.spec.aws.region or self.options.region
            out += specs.moved("cluster.spec.aws.region", made, after.spec.aws.region or self.options.region, what)
        return out

    def _network_violations(self, aws: cluster_pb2.AWSClusterSpec, path: str) -> list[FieldViolation]:
        out: list[FieldViolation] = []
        adopted = bool(aws.vpc_id)
        if adopted and (err := specs.id_error("vpc", aws.vpc_id)):
            out.append(FieldViolation(f"{path}.vpc_id", err))
        vpc: ipaddress.IPv4Network | None = None
        if not adopted:
            try:
                vpc = ipaddress.IPv4Network(aws.vpc_cidr or DEFAULT_VPC_CIDR)
                if not 16 <= vpc.prefixlen <= 28:
                    out.append(FieldViolation(f"{path}.vpc_cidr", "must be a /16 to /28"))
            except ValueError as bad:
                out.append(FieldViolation(f"{path}.vpc_cidr", str(bad)))
            if not aws.internet_gateway and aws.load_balancer_public:
                out.append(FieldViolation(f"{path}.load_balancer_public", "needs internet_gateway"))
        elif aws.internet_gateway:
            out.append(FieldViolation(f"{path}.internet_gateway", "only for a VPC the platform creates"))
        if not aws.subnets:
            out.append(FieldViolation(f"{path}.subnets", "at least one subnet is required"))
        seen: list[ipaddress.IPv4Network] = []
        for i, s in enumerate(aws.subnets):
            sp = f"{path}.subnets[{i}]"
            if adopted:
                if not s.id:
                    out.append(FieldViolation(f"{sp}.id", "is required with vpc_id (an existing subnet)"))
                elif err := specs.id_error("subnet", s.id):
                    out.append(FieldViolation(f"{sp}.id", err))
                continue
            if s.id:
                out.append(FieldViolation(f"{sp}.id", "only with vpc_id; the platform makes its VPC's subnets"))
            if err := specs.zone_error(s.zone):
                out.append(FieldViolation(f"{sp}.zone", err))
            try:
                net = ipaddress.IPv4Network(s.cidr)
            except ValueError as bad:
                out.append(FieldViolation(f"{sp}.cidr", str(bad)))
                continue
            if vpc is not None and not net.subnet_of(vpc):
                out.append(FieldViolation(f"{sp}.cidr", f"{net} is not inside the VPC's {vpc}"))
            if any(net.overlaps(other) for other in seen):
                out.append(FieldViolation(f"{sp}.cidr", f"{net} overlaps another subnet"))
            seen.append(net)
        groups = (aws.control_plane_security_group_id, aws.node_security_group_id)
        if any(groups) and not all(groups):
            out.append(FieldViolation(f"{path}.node_security_group_id", "adopt both security groups, or neither"))
        for name, value in zip(("control_plane_security_group_id", "node_security_group_id"), groups, strict=True):
            if value and (err := specs.id_error("sg", value)):
                out.append(FieldViolation(f"{path}.{name}", err))
        return out

    # -- helpers ------------------------------------------------------------------------------

    def _aws(self, ctx: ClusterContext) -> cluster_pb2.AWSClusterSpec:
        """The spec, checked again with this controller's options (the operator's limits among
        them) before a step makes anything: the object may have been stored before a limit was
        set, or by an apiserver configured otherwise."""
        violations = self.validate(ctx.cluster)
        if violations:
            raise PermanentError("; ".join(f"{v.field}: {v.description}" for v in violations))
        aws = ctx.cluster.spec.aws
        adopts = aws.vpc_id or aws.control_plane_security_group_id or any(s.id for s in aws.subnets)
        if adopts and not ctx.cluster.spec.credential_ref:
            # The platform's own AWS identity serves every tenant: adopting with it could reach
            # another tenant's network.
            raise PermanentError("adopting a VPC, subnets or security groups needs the tenant's spec.credential_ref")
        return aws

    def _region(self, ctx: ClusterContext) -> str:
        # Where EnsureNetwork made the network (its status), as the machines read it: the teardown
        # looks there even for a cluster whose spec was changed before validate_update refused it.
        c = ctx.cluster
        return c.status.aws.region or c.spec.aws.region or self.options.region

    def _client(self, ctx: ClusterContext, service: str) -> Any:
        ref = ctx.cluster.spec.credential_ref
        if not ref and not self.options.default_credentials:
            raise PermanentError("an AWS credential is required: set spec.credential_ref")
        credential = client.credential_for(ctx.tools.credentials, ref)
        return self.clients.get(service, region=self._region(ctx), credential=credential)

    def _base_tags(self, ctx: ClusterContext, role: str = "", **more: str) -> dict[str, str]:
        m = ctx.cluster.metadata
        return tags.of(self.options.platform, m.tenant_id, m.name, m.uid, role, **more)

    def _network(self, ctx: ClusterContext) -> Network:
        return Network(self._client(ctx, "ec2"), self._client(ctx, "elbv2"), self._base_tags(ctx))

    def _instances(self, ctx: ClusterContext) -> Instances:
        return Instances(self._client(ctx, "ec2"))

    def _master_tags(self, ctx: ClusterContext, index: int) -> dict[str, str]:
        uid = ctx.cluster.metadata.uid
        return self._base_tags(
            ctx,
            "master",
            **{
                tags.MACHINE: f"master-{index}",
                tags.MACHINE_UID: f"{uid}-master-{index}",
                tags.MASTER_INDEX: str(index),
            },
        )

    async def _master_interfaces(self, ctx: ClusterContext) -> list[dict[str, Any]]:
        """The masters' interfaces, in index order (TemporaryError while one is missing)."""
        instances = self._instances(ctx)
        out = []
        for i in range(ctx.cluster.spec.aws.control_plane.count):
            interface = await instances.find_interface(tags.identity(self._master_tags(ctx, i)))
            if interface is None:
                raise TemporaryError(f"master {i} has no network interface yet")
            out.append(interface)
        return out

    @contextlib.asynccontextmanager
    async def _api(self, ctx: ClusterContext) -> AsyncIterator[ClusterAPI]:
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        access = admin_access(endpoints.of(ctx.cluster).url, cas.ca, ctx.cluster.spec.version)
        async with ctx.tools.cluster_apis.connect(access) as api:
            yield api

    # -- create -------------------------------------------------------------------------------

    async def ensure_network(self, ctx: ClusterContext) -> None:
        aws = self._aws(ctx)
        network = self._network(ctx)
        vpc_id = await network.ensure_vpc(aws.vpc_id, aws.vpc_cidr or DEFAULT_VPC_CIDR)
        subnets = await network.ensure_subnets(vpc_id, [SubnetWanted(s.id, s.zone, s.cidr) for s in aws.subnets])
        if aws.internet_gateway:
            await network.ensure_internet_route(vpc_id, [s["id"] for s in subnets])
        if aws.control_plane_security_group_id:
            groups = {"control-plane": aws.control_plane_security_group_id, "nodes": aws.node_security_group_id}
        else:
            groups = await network.ensure_security_groups(vpc_id, ctx.cluster.metadata.name)
        status = ctx.obj.status.aws
        status.region = self._region(ctx)
        status.vpc_id = vpc_id
        del status.subnets[:]
        for s in subnets:
            status.subnets.add(id=s["id"], zone=s["zone"], cidr=s["cidr"])
        status.control_plane_security_group_id = groups["control-plane"]
        status.node_security_group_id = groups["nodes"]

    async def ensure_credential(self, ctx: ClusterContext) -> None:
        await cluster_credentials.ensure_cas(ctx.tools.cluster_credentials, ctx.cluster)

    async def _check_owned(self, ctx: ClusterContext, instances: Instances) -> None:
        """With the platform's own AWS identity (which cannot adopt), the subnets and groups in
        status.aws must be the ones EnsureNetwork made for this cluster: a tenant may hold
        update-status through a role a platform administrator wrote or an external authorizer."""
        if ctx.cluster.spec.credential_ref:
            return
        status = ctx.obj.status.aws
        owner = {tags.PLATFORM: self.options.platform, tags.CLUSTER_UID: ctx.cluster.metadata.uid}
        groups = [g for g in (status.control_plane_security_group_id, status.node_security_group_id) if g]
        await instances.check_owned(owner, [s.id for s in status.subnets], groups)

    async def ensure_interfaces(self, ctx: ClusterContext) -> None:
        aws, status = self._aws(ctx), ctx.obj.status.aws
        instances = self._instances(ctx)
        await self._check_owned(ctx, instances)
        for i in range(aws.control_plane.count):
            subnet = status.subnets[i % len(status.subnets)].id
            await instances.ensure_interface(
                self._master_tags(ctx, i),
                subnet,
                [status.control_plane_security_group_id],
                client_token(ctx.cluster.metadata.uid, f"master-{i}-interface"),
            )

    async def ensure_endpoint(self, ctx: ClusterContext) -> None:
        aws, status = self._aws(ctx), ctx.obj.status
        masters = await self._master_interfaces(ctx)
        if aws.load_balancer:
            await self._check_owned(ctx, self._instances(ctx))
            arn, dns = await self._network(ctx).ensure_load_balancer(
                status.aws.vpc_id,
                [s.id for s in status.aws.subnets],
                status.aws.control_plane_security_group_id,
                public=aws.load_balancer_public,
                targets=[m["PrivateIpAddress"] for m in masters],
            )
            status.aws.load_balancer_arn, status.aws.load_balancer_dns_name = arn, dns
            wanted = endpoints.Endpoint(dns, API_PORT)
        elif ctx.cluster.spec.HasField("control_plane_endpoint") and ctx.cluster.spec.control_plane_endpoint.host:
            e = ctx.cluster.spec.control_plane_endpoint
            wanted = endpoints.Endpoint(e.host, e.port or API_PORT)
        else:
            wanted = endpoints.Endpoint(masters[0]["PrivateIpAddress"], API_PORT)
        if not status.control_plane_endpoint:
            status.control_plane_endpoint = wanted.address

    def _node(self, ctx: ClusterContext, interface: dict[str, Any]) -> kubecfg.Node:
        ignore = ["Swap"] if self._profile(ctx).swap == "kubelet" else []
        name = private_dns_name(interface, self._region(ctx))
        return kubecfg.Node(name, interface["PrivateIpAddress"], control_plane=True, ignore_preflight_errors=ignore)

    def _profile(self, ctx: ClusterContext) -> nodeprep.Profile:
        return nodeprep.choose(self.profiles, ctx.cluster.spec.install_profile, ctx.cluster.metadata.tenant_id)

    def _sans(self, ctx: ClusterContext, masters: list[dict[str, Any]]) -> list[str]:
        names = [endpoints.of(ctx.cluster).host, ctx.obj.status.aws.load_balancer_dns_name]
        names += [m["PrivateIpAddress"] for m in masters] + [private_dns_name(m, self._region(ctx)) for m in masters]
        return [n for n in dict.fromkeys(names) if n]

    async def _launched(self, ctx: ClusterContext, index: int) -> bool:
        """Whether master `index` has its instance; one terminated outside the platform fails."""
        found = await self._instances(ctx).find(tags.identity(self._master_tags(ctx, index)), [*ALIVE, *GONE])
        if any(i["State"]["Name"] in ALIVE for i in found):
            return True
        if found:
            raise PermanentError(f"master {index} ({found[0]['InstanceId']}) was terminated outside the platform")
        return False

    async def _launch(
        self, ctx: ClusterContext, index: int, interface: dict[str, Any], kubeadm: str, config: str
    ) -> None:
        """Launch master `index` with cloud-init running `kubeadm <kubeadm>` with `config`."""
        self._aws(ctx)
        instances = self._instances(ctx)
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        node = self._node(ctx, interface)
        files = userdata.pki_files(cas.files())
        if (scheduler := network.scheduler_file(ctx.cluster, self.network)) is not None:
            files[network.SCHEDULER_CONFIG] = (scheduler, 0o644)
        bootstrap = userdata.NodeBootstrap(
            env=nodes.environment(ctx.cluster, nodes.Paths(), node_ip=node.address, node_name=node.name, role="master"),
            profile=self._profile(ctx),
            version=ctx.cluster.spec.version,
            kubeadm_config=config,
            kubeadm=kubeadm,
            files=files,
        )
        await instances.launch(
            specs.launch_spec(ctx.cluster.spec.aws.control_plane.machine),
            interface["NetworkInterfaceId"],
            self._master_tags(ctx, index),
            userdata.pack(bootstrap.document()),
            client_token(ctx.cluster.metadata.uid, f"master-{index}"),
        )

    async def launch_first(self, ctx: ClusterContext) -> None:
        self._aws(ctx)
        masters = await self._master_interfaces(ctx)
        token = kubecfg.BootstrapToken(
            nodes.new_bootstrap_token(), self.options.bootstrap_token_ttl, f"tke: install {ctx.cluster.metadata.name}"
        )
        config = nodes.init_documents(
            ctx.cluster,
            self._node(ctx, masters[0]),
            token,
            self._sans(ctx, masters),
            userdata.PKI_DIR,
            fail_swap_on=self._profile(ctx).swap == "off",
            scheduler_config=network.SCHEDULER_CONFIG if network.uses_ipamd(ctx.cluster) else "",
        )
        if not await self._launched(ctx, 0):
            await self._launch(ctx, 0, masters[0], "init", config)

    async def wait_ready(self, ctx: ClusterContext) -> None:
        async with self._api(ctx) as api:
            ctx.obj.status.version = (await api.ready()).lstrip("v")

    async def launch_others(self, ctx: ClusterContext) -> None:
        masters = await self._master_interfaces(ctx)
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        for i, interface in enumerate(masters[1:], start=1):
            if await self._launched(ctx, i):
                continue
            token = nodes.new_bootstrap_token()
            async with self._api(ctx) as api:
                await api.create_bootstrap_token(
                    token, self.options.bootstrap_token_ttl, f"tke: join control-plane {interface['PrivateIpAddress']}"
                )
            config = nodes.join_documents(
                ctx.cluster, self._node(ctx, interface), token, cas.ca.pair.cert_pem, userdata.PKI_DIR
            )
            await self._launch(ctx, i, interface, "join", config)

    async def wait_masters(self, ctx: ClusterContext) -> None:
        masters = await self._master_interfaces(ctx)
        installed = {m.node_name for m in ctx.obj.status.control_plane}
        async with self._api(ctx) as api:
            for interface in masters:
                node = self._node(ctx, interface)
                if node.name in installed:
                    continue
                found = await api.node(node.name)
                if found is None or not node_status.report(found).ready:
                    raise TemporaryError(f"master {node.name} is not Ready yet", delay=5.0)
                member = ctx.obj.status.control_plane.add(node_name=node.name)
                member.machine.ip = node.address
                installed.add(node.name)

    async def record_addresses(self, ctx: ClusterContext) -> None:
        status = ctx.obj.status
        ep = endpoints.of(ctx.cluster)
        del status.addresses[:]
        status.addresses.add(type="Advertise", host=ep.host, port=ep.port)
        for member in status.control_plane:
            status.addresses.add(type="Internal", host=member.machine.ip, port=API_PORT)

    async def addons(self, ctx: ClusterContext) -> None:
        async with self._api(ctx) as api:
            await rollout.ensure_network(api, ctx.cluster, self.network)

    # -- delete -------------------------------------------------------------------------------

    async def terminate(self, ctx: ClusterContext) -> None:
        instances = self._instances(ctx)
        pending = await instances.terminate(tags.identity(self._base_tags(ctx, "master")))
        if pending:
            raise TemporaryError(f"masters {', '.join(pending)} are shutting down", delay=5.0)

    async def delete_interfaces(self, ctx: ClusterContext) -> None:
        instances = self._instances(ctx)
        for i in range(ctx.cluster.spec.aws.control_plane.count):
            await instances.delete_interface(tags.identity(self._master_tags(ctx, i)))

    async def delete_load_balancer(self, ctx: ClusterContext) -> None:
        await self._network(ctx).delete_load_balancer()

    async def delete_network(self, ctx: ClusterContext) -> None:
        await self._network(ctx).delete_network()

    async def delete_credential(self, ctx: ClusterContext) -> None:
        await ctx.tools.cluster_credentials.delete(ctx.cluster.metadata.tenant_id, ctx.cluster.metadata.name)

    async def check_health(self, ctx: ClusterContext) -> str:
        async with self._api(ctx) as api:
            version = await api.ready()
        return f"{endpoints.of(ctx.cluster).address}: ready ({version})"


def _cluster_key(ctx: ClusterContext) -> str:
    c = ctx.cluster.metadata
    return f"cluster {c.tenant_id}/{c.name} ({c.uid})"
