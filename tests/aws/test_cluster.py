"""An aws cluster end to end: tke-controller (in process, with a real apiserver and etcd)
makes the network, the load balancer and three masters in moto's EC2 and ELBv2, and a worker
Machine of type aws; the test plays cloud-init, kubeadm and the kubelets (no VM boots in moto:
tests/support/cloud_init.py) against the Kubernetes API stand-in, which the first master's
init brings up. The cluster and the machine reach Running, with the network add-on of its
fixed-IP mode applied through the cluster's API (and kube-scheduler's extender configuration
in every master's cloud-init), and applied again by a spec change without changing anything;
a worker whose instance is terminated behind the platform's back is reported Failed, not
replaced; deleting the cluster removes every AWS resource the platform made."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import field_mask_pb2

from tests.support import kubeadm_reference
from tests.support.apiserver import Running
from tests.support.aws import Moto, an_image, aws_cluster
from tests.support.cloud_init import CloudInit, StandInAPIs
from tests.support.controller import controller_config
from tests.support.kube import rollouts
from tests.support.waiting import wait_for
from tke.internal.controller.manager import Controller
from tke.internal.controller.progress import find
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.provider.addons import network
from tke.internal.provider.clusterapi import KubeClusterAPI
from tke.internal.storage.etcd import EtcdConfig
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, machine_pb2
from tke.plugins.aws import tags

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


@contextlib.asynccontextmanager
async def platform(api: Running, etcd_config: EtcdConfig, moto: Moto, apis: StandInAPIs) -> AsyncIterator[None]:
    options = {"endpoint_url": moto.url, "region": "us-east-1"}
    config = controller_config(
        api.address,
        etcd_config,
        cluster_providers={"aws": ProviderConfig(options=options)},
        machine_providers={"aws": ProviderConfig(options=options)},
    )
    task = asyncio.create_task(Controller(config, cluster_apis=apis).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def cloud_init(player: CloudInit) -> AsyncIterator[CloudInit]:
    task = asyncio.create_task(player.run())
    try:
        yield player
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        player.close()


def aws_worker(image: str) -> machine_pb2.Machine:
    m = machine_pb2.Machine()
    m.metadata.name = "w1"
    m.spec.cluster_name, m.spec.type = "prod", "aws"
    m.spec.role = machine_pb2.MACHINE_ROLE_WORKER
    m.spec.labels["pool"] = "general"
    m.spec.aws.instance_type = "t3.medium"
    m.spec.aws.image_id = image
    return m


async def test_a_cluster_of_aws_masters_and_workers_runs_and_is_deleted_with_what_it_made(
    api: Running, etcd_config: EtcdConfig, moto: Moto, tmp_path: Path
) -> None:
    ec2, elb = moto.client("ec2"), moto.client("elbv2")
    image = an_image(ec2)
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=aws_cluster(image)))
    await api.machines.Create(machine_pb2.CreateMachineRequest(machine=aws_worker(image)))
    apis = StandInAPIs()
    player = CloudInit(ec2, apis, tmp_path)

    async def cluster_running() -> cluster_pb2.Cluster | None:
        assert player.refused == {}
        c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="prod"))
        return c if c.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING else None

    async def machine_running() -> machine_pb2.Machine | None:
        m = await api.machines.Get(machine_pb2.GetMachineRequest(name="w1"))
        return m if m.status.phase == machine_pb2.MACHINE_PHASE_RUNNING else None

    async with cloud_init(player), platform(api, etcd_config, moto, apis):
        c = await wait_for(cluster_running, within=150, what="the cluster Running")
        m = await wait_for(machine_running, within=90, what="the worker Running")
        assert player.refused == {}

        # One init on master 0, control-plane joins on the two others, a worker join.
        verbs = sorted((p.kubeadm, p.control_plane) for p in player.played.values())
        assert verbs == [("init", True), ("join", False), ("join", True), ("join", True)]
        uid = c.metadata.uid
        by_role = [
            {"Name": f"tag:{tags.CLUSTER_UID}", "Values": [uid]},
            {"Name": f"tag:{tags.ROLE}", "Values": ["master"]},
        ]
        masters = [i for r in ec2.describe_instances(Filters=by_role)["Reservations"] for i in r["Instances"]]
        assert len(masters) == 3 and {i["InstanceType"] for i in masters} == {"m5.large"}
        # Spread over the subnets (zones) in turn. (moto reports every instance's Placement in
        # us-east-1a whatever its interface's subnet: the interfaces say where they are.)
        subnets = {s.id: s.zone for s in c.status.aws.subnets}
        zones = sorted(subnets[i["NetworkInterfaces"][0]["SubnetId"]] for i in masters)
        assert zones == ["us-east-1a", "us-east-1a", "us-east-1b"]

        # The endpoint is the load balancer, forwarding to the three masters.
        lb = elb.describe_load_balancers(Names=[c.status.aws.load_balancer_arn.split("/")[-2]])["LoadBalancers"][0]
        assert (
            c.status.control_plane_endpoint == f"{lb['DNSName']}:6443" == f"{c.status.aws.load_balancer_dns_name}:6443"
        )
        groups = elb.describe_target_groups(LoadBalancerArn=lb["LoadBalancerArn"])["TargetGroups"]
        targets = elb.describe_target_health(TargetGroupArn=groups[0]["TargetGroupArn"])["TargetHealthDescriptions"]
        assert sorted(t["Target"]["Id"] for t in targets) == sorted(i["PrivateIpAddress"] for i in masters)
        assert sorted(x.machine.ip for x in c.status.control_plane) == sorted(i["PrivateIpAddress"] for i in masters)
        init = next(p for p in player.played.values() if p.kubeadm == "init")
        sans = init.documents["ClusterConfiguration"]["apiServer"]["certSANs"]
        assert lb["DNSName"] in sans and all(i["PrivateIpAddress"] in sans for i in masters)

        # The network: the VPC, a subnet per zone, the gateway and route, two groups with the ports.
        vpc = c.status.aws.vpc_id
        assert ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"] == "10.50.0.0/16"
        assert sorted((s.zone, s.cidr) for s in c.status.aws.subnets) == [
            ("us-east-1a", "10.50.1.0/24"),
            ("us-east-1b", "10.50.2.0/24"),
        ]
        gateways = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc]}])
        assert len(gateways["InternetGateways"]) == 1
        cp = ec2.describe_security_groups(GroupIds=[c.status.aws.control_plane_security_group_id])["SecurityGroups"][0]
        ports = {(p.get("FromPort"), p.get("ToPort")) for p in cp["IpPermissions"] if p["IpProtocol"] == "tcp"}
        assert {(6443, 6443), (2379, 2380), (10250, 10250), (10257, 10257), (10259, 10259)} <= ports
        nodes_sg = ec2.describe_security_groups(GroupIds=[c.status.aws.node_security_group_id])["SecurityGroups"][0]
        assert (30000, 32767) in {(p.get("FromPort"), p.get("ToPort")) for p in nodes_sg["IpPermissions"]}

        # -- the network add-on: applied through the cluster's API once it answered, before the
        # other masters join (the player's kubelets report NotReady until tke-cni exists), and
        # rolled out (the player plays the DaemonSet and Deployment controllers' status) --
        addons = find(c.status.conditions, "AddonsReady")
        assert addons is not None and addons.status == meta_pb2.CONDITION_STATUS_TRUE
        assert player.admin is not None
        admin = player.admin

        async def rolled_out_on_every_node() -> bool:  # the worker's Node too
            got = await KubeClusterAPI(admin, 1.0).rollout("DaemonSet", "kube-system", "tke-cni")
            return got is not None and got.done and got.desired == 4

        await wait_for(rolled_out_on_every_node, within=30, what="tke-cni on the masters and the worker")
        first = await rollouts.applied(admin, network.render(c))
        assert set(first) == {
            "ServiceAccount/tke-cni", "ClusterRole/tke:cni", "ClusterRoleBinding/tke:cni", "ConfigMap/tke-cni",
            "DaemonSet/tke-cni", "ServiceAccount/tke-ipamd", "ClusterRole/tke:ipamd", "ClusterRoleBinding/tke:ipamd",
            "ConfigMap/tke-ipamd", "DaemonSet/tke-ipamd", "Deployment/tke-ipamd-watcher",
        }  # fmt: skip
        assert first["DaemonSet/tke-ipamd"][1] == first["Deployment/tke-ipamd-watcher"][1] == 1
        # kube-scheduler on every master reads the extender's configuration: each master's
        # cloud-init writes it, and the ClusterConfiguration (init's, which kubeadm stores and
        # every control-plane join makes its static pods from) mounts it.
        cc = init.documents["ClusterConfiguration"]["scheduler"]
        assert cc["extraArgs"] == {"config": network.SCHEDULER_CONFIG}  # kubeadm v1beta3 for 1.30
        assert cc["extraVolumes"][0]["hostPath"] == network.SCHEDULER_CONFIG
        for played in (p for p in player.played.values() if p.control_plane):
            doc = yaml.safe_load(played.files[network.SCHEDULER_CONFIG])
            assert kubeadm_reference.errors(doc) == []
            assert doc["extenders"][0]["urlPrefix"] == "http://127.0.0.1:9040"
        assert network.SCHEDULER_CONFIG not in next(p for p in player.played.values() if not p.control_plane).files
        # A spec change applies it again (ScaleAddonsReady), changing no object.
        change = cluster_pb2.Cluster()
        change.metadata.name, change.spec.display_name = "prod", "production"
        mask = field_mask_pb2.FieldMask(paths=["spec.display_name"])
        await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=change, update_mask=mask))

        async def applied_again() -> bool:
            got = await cluster_running()
            done = find(got.status.conditions, "ScaleAddonsReady") if got is not None else None
            return done is not None and done.status == meta_pb2.CONDITION_STATUS_TRUE

        await wait_for(applied_again, within=60, what="the scale plan's AddonsReady")
        assert await rollouts.applied(admin, network.render(c)) == first

        # The worker: in the cluster's network, its Node's name and addresses in its status.
        worker = next(p for p in player.played.values() if not p.control_plane)
        assert m.status.provider_id.endswith(worker.instance_id)
        assert next(a.address for a in m.status.addresses if a.type == "Hostname") == worker.node
        assert m.status.node_info.kubelet_version == "v1.30.2"

        # The worker's instance is terminated outside the platform: the machine is reported
        # Failed with the reason (its health check), and no instance replaces it.
        ec2.terminate_instances(InstanceIds=[worker.instance_id])

        async def reported() -> machine_pb2.Machine | None:
            got = await api.machines.Get(machine_pb2.GetMachineRequest(name="w1"))
            return got if got.status.phase == machine_pb2.MACHINE_PHASE_FAILED else None

        failed = await wait_for(reported, within=60, what="the worker reported Failed")
        assert failed.status.reason == "Unhealthy"
        assert f"instance {worker.instance_id} is terminated: it was terminated outside the platform" in (
            failed.status.message
        )
        machine_uid = {"Name": f"tag:{tags.MACHINE_UID}", "Values": [m.metadata.uid]}
        assert len(ec2.describe_instances(Filters=[machine_uid])["Reservations"]) == 1

        # Delete: the worker first, then the masters, the load balancer and the network.
        await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="prod"))

        async def gone() -> bool:
            try:
                await api.clusters.Get(cluster_pb2.GetClusterRequest(name="prod"))
            except grpc.aio.AioRpcError as err:
                return err.code() == grpc.StatusCode.NOT_FOUND
            return False

        await wait_for(gone, within=120, what="the cluster deleted")

    mine = [{"Name": f"tag:{tags.CLUSTER_UID}", "Values": [uid]}]
    states = {i["State"]["Name"] for r in ec2.describe_instances(Filters=mine)["Reservations"] for i in r["Instances"]}
    assert states == {"terminated"}
    assert ec2.describe_network_interfaces(Filters=mine)["NetworkInterfaces"] == []
    assert ec2.describe_security_groups(Filters=mine)["SecurityGroups"] == []
    assert ec2.describe_subnets(Filters=mine)["Subnets"] == []
    assert ec2.describe_vpcs(Filters=mine)["Vpcs"] == []
    assert ec2.describe_internet_gateways(Filters=mine)["InternetGateways"] == []
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    assert elb.describe_target_groups()["TargetGroups"] == []
