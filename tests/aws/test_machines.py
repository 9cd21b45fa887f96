"""The aws machine provider against moto's EC2 server: instances made, found again, terminated,
reported when they vanish; throttling retried by botocore; permanent errors end the step. The
cluster's Kubernetes API is a recording double here (tests/aws/test_cluster.py runs the whole
flow against the API stand-in)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Node

from tests.support import kubeadm_reference
from tests.support.aws import AWSProxy, Moto, NoDialer, an_image, instances
from tests.support.kube import objects
from tests.support.provider_steps import MemoryCredentialStore, run_steps
from tests.support.waiting import wait_for
from tke.internal.controller.events import MemoryRecorder
from tke.internal.controller.progress import RetryPolicy
from tke.internal.controller.runner import Abort, Runner
from tke.internal.provider.cluster_credentials import ensure_cas, read_cas
from tke.internal.provider.clusterapi import ClusterAPI, Rollout
from tke.internal.provider.contract import MachineContext, Tools
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.access import ClusterAccess
from tke.platform.v1 import cluster_pb2, machine_pb2
from tke.plugins.aws import tags, userdata
from tke.plugins.machine_providers.aws import AWSMachineProvider

pytestmark = pytest.mark.timeout(120)


@dataclass
class RecordingAPI:
    """The cluster's API as the machine provider uses it: tokens stored, Nodes registered by
    the test (playing the kubelet)."""

    tokens: list[tuple[str, float, str]] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def connect(self, access: ClusterAccess) -> AsyncIterator[ClusterAPI]:
        yield self

    async def ready(self) -> str:
        return "v1.31.2"

    async def node(self, name: str) -> Node | None:
        return self.nodes.get(name)

    async def drain(self, name: str, timeout: float) -> None:  # noqa: ASYNC109 - the Protocol's
        self.calls.append(("drain", name))

    async def uncordon(self, name: str) -> None:
        self.calls.append(("uncordon", name))

    async def delete_node(self, name: str) -> None:
        self.calls.append(("delete_node", name))
        self.nodes.pop(name, None)

    async def create_bootstrap_token(self, token: str, ttl_seconds: float, description: str) -> None:
        self.tokens.append((token, ttl_seconds, description))

    async def apply(self, objects: Sequence[Mapping[str, Any]]) -> None:
        raise AssertionError("a machine provider applies no manifests")

    async def rollout(self, kind: str, namespace: str, name: str) -> Rollout | None:
        raise AssertionError("a machine provider follows no rollout")


@dataclass
class World:
    moto: Moto
    ec2: Any
    cluster: cluster_pb2.Cluster
    image: str
    api: RecordingAPI
    tools: Tools


@pytest.fixture
async def world(moto: Moto) -> World:
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]
    group = ec2.create_security_group(GroupName="nodes", Description="nodes", VpcId=vpc)["GroupId"]
    c = cluster_pb2.Cluster()
    c.metadata.name, c.metadata.uid, c.metadata.tenant_id = "prod", str(uuid.uuid4()), "team-a"
    # Tagged as the cluster provider's EnsureNetwork tags what it makes.
    ec2.create_tags(
        Resources=[subnet["SubnetId"], group], Tags=tags.aws(tags.of("tke", "team-a", "prod", c.metadata.uid, "node"))
    )
    c.spec.type, c.spec.version = "aws", "1.31.2"
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    c.status.version = "1.31.2"
    c.status.control_plane_endpoint = "10.30.1.10:6443"
    c.status.phase = cluster_pb2.CLUSTER_PHASE_RUNNING
    c.status.aws.region = "us-east-1"
    c.status.aws.vpc_id = vpc
    c.status.aws.subnets.add(id=subnet["SubnetId"], zone="us-east-1a", cidr="10.30.1.0/24")
    c.status.aws.node_security_group_id = group
    store = MemoryCredentialStore()
    await ensure_cas(store, c)
    api = RecordingAPI()
    tools = Tools(
        dialer=NoDialer(),
        credentials=ConfiguredCredentials({}).for_tenant("team-a"),
        cluster_credentials=store,
        cluster_apis=api,
    )
    return World(moto, ec2, c, an_image(ec2), api, tools)


def provider(url: str, **options: Any) -> AWSMachineProvider:
    return AWSMachineProvider(endpoint_url=url, region="us-east-1", **options)


def machine(world: World, name: str = "w1", image: str = "") -> machine_pb2.Machine:
    m = machine_pb2.Machine()
    m.metadata.name, m.metadata.uid, m.metadata.tenant_id = name, str(uuid.uuid4()), "team-a"
    m.spec.cluster_name, m.spec.type = "prod", "aws"
    m.spec.role = machine_pb2.MACHINE_ROLE_WORKER
    m.spec.labels["pool"] = "general"
    m.spec.taints.add(key="dedicated", value="batch", effect="NoSchedule")
    m.spec.aws.instance_type = "t3.medium"
    m.spec.aws.image_id = image or world.image
    m.spec.aws.root_volume.size_gib = 30
    return m


def context(world: World, m: machine_pb2.Machine) -> MachineContext:
    return MachineContext(obj=m, cluster=world.cluster, tools=world.tools)


def kubelet_registers(world: World, name: str) -> None:
    node = from_dict(objects.node(name, ip="10.30.1.99", kubelet="v1.31.2"))
    assert isinstance(node, Node)
    world.api.nodes[name] = node


def user_data_of(ec2: Any, instance_id: str) -> dict[str, Any]:
    raw = base64.b64decode(
        ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    )
    text = userdata.unpack(raw)
    assert text.startswith("#cloud-config\n")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def files_of(doc: dict[str, Any]) -> dict[str, tuple[bytes, str]]:
    return {f["path"]: (base64.b64decode(f["content"]), f["permissions"]) for f in doc["write_files"]}


async def test_a_machine_is_an_instance_joined_by_cloud_init_and_deleted(world: World) -> None:
    p = provider(world.moto.url)
    m = machine(world)
    ctx = context(world, m)
    await run_steps(p.create_steps[:3], ctx)
    found = instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid})
    assert len(found) == 1
    instance = found[0]
    assert instance["InstanceType"] == "t3.medium" and instance["ImageId"] == world.image
    assert m.status.provider_id == f"aws:///us-east-1a/{instance['InstanceId']}"
    got = tags.read(instance["Tags"])
    assert got[tags.PLATFORM] == "tke" and got[tags.TENANT] == "team-a"
    assert got[tags.CLUSTER] == "prod" and got[tags.CLUSTER_UID] == world.cluster.metadata.uid
    assert got[tags.MACHINE] == "w1" and got[tags.ROLE] == "worker"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    ip = instance["PrivateIpAddress"]
    name = f"ip-{ip.replace('.', '-')}.ec2.internal"
    assert {(a.type, a.address) for a in m.status.addresses} >= {("InternalIP", ip), ("Hostname", name)}

    # The user data: cloud-config preparing the node as the install profile says and joining
    # it with a JoinConfiguration of the reference fields, a stored token and the CA's pin.
    doc = user_data_of(world.ec2, instance["InstanceId"])
    files = files_of(doc)
    assert b"SystemdCgroup = true" in files["/etc/containerd/config.toml"][0]
    assert b"br_netfilter" in files["/etc/modules-load.d/kubernetes.conf"][0]
    assert b"v1.31" in files["/etc/apt/sources.list.d/kubernetes.list"][0]
    config, mode = files[userdata.KUBEADM_CONFIG]
    assert mode == "0600"
    (join,) = list(yaml.safe_load_all(config))
    assert kubeadm_reference.errors(join) == []
    assert join["kind"] == "JoinConfiguration" and join["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    discovery = join["discovery"]["bootstrapToken"]
    assert discovery["apiServerEndpoint"] == "10.30.1.10:6443"
    cas = await read_cas(world.tools.cluster_credentials, world.cluster)
    assert discovery["caCertHashes"] == [pki.ca_cert_hash(cas.ca.pair.cert_pem)]
    assert [t[0] for t in world.api.tokens] == [discovery["token"]]
    registration = join["nodeRegistration"]
    assert registration["name"] == name and {"name": "node-ip", "value": ip} in registration["kubeletExtraArgs"]
    assert registration["taints"] == [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]
    script = doc["runcmd"][0][2]
    assert script.startswith("set -eu\n") and "modprobe br_netfilter" in script
    assert f"kubeadm join --config {userdata.KUBEADM_CONFIG}" in script and f"rm -f {userdata.KUBEADM_CONFIG}" in script
    assert discovery["token"] not in script  # the token is in the 0600 file only

    # The kubelet registers the Node: the machine is Ready, with what the Node reports.
    kubelet_registers(world, name)
    await run_steps(p.create_steps[3:], ctx)
    assert m.status.node_info.kubelet_version == "v1.31.2"
    assert "Ready" in await p.check_health(ctx)

    await run_steps(p.delete_steps, ctx)
    assert world.api.calls == [("drain", name), ("delete_node", name)]
    (gone,) = instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid})
    assert gone["State"]["Name"] == "terminated"
    interfaces = world.ec2.describe_network_interfaces(
        Filters=[{"Name": f"tag:{tags.MACHINE_UID}", "Values": [m.metadata.uid]}]
    )
    assert interfaces["NetworkInterfaces"] == []


async def test_a_controller_killed_between_run_instances_and_its_status_write_makes_no_second_instance(
    world: World,
) -> None:
    m = machine(world)
    await run_steps(provider(world.moto.url).create_steps[:1], context(world, m))
    with AWSProxy(world.moto.url) as proxy:
        proxy.state.hold.add("RunInstances")
        first = provider(proxy.url)
        launching = asyncio.create_task(first.launch(context(world, m)))
        # RunInstances reached EC2 (moto made the instance); its answer never comes back:
        await asyncio.to_thread(proxy.state.held.wait, 60)
        launching.cancel()  # the controller dies here, before the step's status write
        with contextlib.suppress(asyncio.CancelledError):
            await launching
        assert m.status.provider_id == ""
        # A new controller runs the step again: it finds the instance by its tags.
        again = provider(proxy.url)
        await run_steps(again.create_steps[1:3], context(world, m))
        assert proxy.state.seen.get("RunInstances") == 1
    found = instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid})
    assert len(found) == 1 and m.status.provider_id.endswith(found[0]["InstanceId"])


async def test_a_delete_while_run_instances_is_in_flight_leaves_no_instance_or_interface(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The delete cancels LaunchInstance at once although RunInstances runs on in its thread,
    and the teardown looks for the instance only once RunInstances has made it: nothing of the
    machine is left in EC2. (A teardown that looked while the call was in flight found no
    instance, succeeded, and the instance appeared afterwards and kept running.)"""
    caplog.set_level(logging.INFO, logger="tke.plugins.aws.client")
    p = provider(world.moto.url)
    m = machine(world)
    ctx = context(world, m)
    # A gate in front of the provider's RunInstances: the call is in its thread, not yet sent.
    ec2 = p.clients.get("ec2", region="us-east-1")
    entered, release = threading.Event(), threading.Event()
    run_instances = ec2.run_instances

    @functools.wraps(run_instances)
    def gated(**params: Any) -> Any:
        entered.set()
        release.wait(60)
        return run_instances(**params)

    ec2.run_instances = gated

    async def write(obj: machine_pb2.Machine) -> machine_pb2.Machine:
        return obj

    runner: Runner[MachineContext] = Runner("Machine", MemoryRecorder(), RetryPolicy(3, 0.1, 1.0), 0)
    abort = Abort()
    plan = asyncio.create_task(runner.run(ctx, p.create_steps, write, abort=abort))
    teardown: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(entered.wait, 60)
        abort.request("the machine is being deleted")
        # The create plan stops now, without waiting for RunInstances.
        await wait_for(plan.done, what="the create plan stopped by the delete")
        assert plan.result().aborted
        assert instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid}) == []
        assert [s.name for s in p.delete_steps[:3]] == ["DrainNode", "DeleteNode", "TerminateInstance"]
        teardown = asyncio.create_task(run_steps(p.delete_steps[:3], ctx))
        # The teardown is under way up to TerminateInstance (waiting for the call, or, without
        # the wait, done): only now does RunInstances reach EC2.
        await wait_for(
            lambda: teardown.done() or "waiting for AWS calls made before to end: run_instances" in caplog.text,
            what="the teardown under way",
        )
    finally:
        release.set()
    await teardown
    # RunInstances ran, after the delete began (its thread ends by itself: wait for its instance).
    await wait_for(
        lambda: instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid}), what="RunInstances made its instance"
    )
    alive = [
        i["InstanceId"]
        for i in instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid})
        if i["State"]["Name"] != "terminated"
    ]
    assert alive == [], f"instances of the deleted machine left running: {alive}"
    await run_steps(p.delete_steps[3:], ctx)
    mine = [{"Name": f"tag:{tags.MACHINE_UID}", "Values": [m.metadata.uid]}]
    assert world.ec2.describe_network_interfaces(Filters=mine)["NetworkInterfaces"] == []


async def test_a_step_run_again_after_its_timeout_waits_for_its_earlier_call_and_makes_no_second_interface(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """CreateNetworkInterface timed out (cancelled) while its call ran on in its thread; the
    step's next attempt waits for that call and finds its interface instead of making another
    (EC2 would match the ClientToken; moto does not, and the tags only find what exists)."""
    caplog.set_level(logging.INFO, logger="tke.plugins.aws.client")
    p = provider(world.moto.url)
    m = machine(world)
    ctx = context(world, m)
    ec2 = p.clients.get("ec2", region="us-east-1")
    entries, release = threading.Semaphore(0), threading.Event()
    create = ec2.create_network_interface

    @functools.wraps(create)
    def gated(**params: Any) -> Any:
        entries.release()
        release.wait(60)
        return create(**params)

    ec2.create_network_interface = gated
    step = p.create_steps[0]
    assert step.name == "CreateNetworkInterface"

    async def attempt() -> None:
        await step.run(ctx)

    first = asyncio.create_task(attempt())
    again: asyncio.Task[None] | None = None
    try:
        assert await asyncio.to_thread(entries.acquire, True, 60)
        first.cancel()  # the step's timeout
        await asyncio.wait({first})
        again = asyncio.create_task(attempt())
        # The second attempt waits for the first's call (or, without the wait, makes its own).
        await wait_for(
            lambda: (
                "waiting for AWS calls made before to end: create_network_interface" in caplog.text
                or entries.acquire(blocking=False)
            ),
            what="the second attempt under way",
        )
    finally:
        release.set()
    await again
    mine = [{"Name": f"tag:{tags.MACHINE_UID}", "Values": [m.metadata.uid]}]
    found = world.ec2.describe_network_interfaces(Filters=mine)["NetworkInterfaces"]
    assert [i["PrivateIpAddress"] for i in found] == [a.address for a in m.status.addresses if a.type == "InternalIP"]


async def test_an_instance_terminated_outside_the_platform_is_reported_not_recreated(world: World) -> None:
    p = provider(world.moto.url)
    m = machine(world)
    ctx = context(world, m)
    await run_steps(p.create_steps[:3], ctx)
    kubelet_registers(world, next(a.address for a in m.status.addresses if a.type == "Hostname"))
    await run_steps(p.create_steps[3:], ctx)
    instance_id = m.status.provider_id.rsplit("/", 1)[1]
    world.ec2.terminate_instances(InstanceIds=[instance_id])
    with pytest.raises(TemporaryError, match=f"instance {instance_id} is terminated: it was terminated outside"):
        await p.check_health(ctx)
    # The create steps run again (a spec change, a new controller) and do not launch another.
    with pytest.raises(PermanentError, match="terminated outside the platform"):
        await p.launch(ctx)
    with pytest.raises(PermanentError, match="terminated outside the platform"):
        await p.wait_running(ctx)
    assert len(instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid})) == 1


async def test_throttling_is_retried_by_botocore_and_the_step_succeeds(world: World) -> None:
    with AWSProxy(world.moto.url) as proxy:
        proxy.state.throttle.update({"RunInstances": 2, "CreateNetworkInterface": 1})
        p = provider(proxy.url, max_attempts=4)
        m = machine(world)
        await run_steps(p.create_steps[:2], context(world, m))
        assert proxy.state.throttled == {"RunInstances": 2, "CreateNetworkInterface": 1}
        assert proxy.state.seen["RunInstances"] == 3  # two throttled, then EC2's answer
    assert len(instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid})) == 1
    # Past the attempts, the step fails temporarily: the framework tries it again later.
    with AWSProxy(world.moto.url) as proxy:
        proxy.state.throttle["DescribeInstances"] = 10
        p = provider(proxy.url, max_attempts=2)
        with pytest.raises(TemporaryError, match="RequestLimitExceeded"):
            await p.launch(context(world, machine(world, "w2")))


async def test_an_invalid_image_ends_the_step_with_ec2s_reason(world: World) -> None:
    p = provider(world.moto.url)
    m = machine(world, image="ami-12345678")
    await run_steps(p.create_steps[:1], context(world, m))
    with pytest.raises(PermanentError, match=r"InvalidAMIID\.NotFound"):
        await p.launch(context(world, m))
    m.spec.aws.image_id = "not-an-image"  # what the apiserver refuses; EC2 refuses it too
    assert [v.field for v in p.validate(m)] == ["machine.spec.aws.image_id"]
    with pytest.raises(PermanentError, match=r"InvalidAMIID\.Malformed"):
        await p.launch(context(world, m))
    assert instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid}) == []


async def test_a_machine_over_the_operators_limits_launches_nothing(world: World) -> None:
    # Stored before the operator set the limits (or by an apiserver configured otherwise).
    m = machine(world)
    m.spec.aws.instance_type = "p5.48xlarge"
    m.spec.aws.root_volume.size_gib = 16384
    ctx = context(world, m)
    with pytest.raises(PermanentError) as refused:
        await run_steps(provider(world.moto.url).create_steps[:3], ctx)
    assert "machine.spec.aws.instance_type: 'p5.48xlarge' is not allowed here; allowed: t3.*" in str(refused.value)
    assert "machine.spec.aws.root_volume.size_gib: 16384 GiB is more than allowed here" in str(refused.value)
    mine = [{"Name": f"tag:{tags.MACHINE_UID}", "Values": [m.metadata.uid]}]
    assert world.ec2.describe_network_interfaces(Filters=mine)["NetworkInterfaces"] == []
    # Its interface made under looser options, the launch is still refused.
    await run_steps(
        provider(world.moto.url, allowed_instance_types=["*"], max_root_volume_gib=16384).create_steps[:1], ctx
    )
    with pytest.raises(PermanentError, match=r"'p5\.48xlarge' is not allowed here"):
        await provider(world.moto.url).launch(ctx)
    assert instances(world.ec2, **{tags.MACHINE_UID: m.metadata.uid}) == []


async def test_a_tenant_cannot_use_another_tenants_aws_credential(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_B_KEY_ID", "AKIDTEAMB")
    monkeypatch.setenv("TEAM_B_SECRET", "secret-b")
    config = CredentialConfig(aws_access_key_id_env="TEAM_B_KEY_ID", aws_secret_access_key_env="TEAM_B_SECRET")
    # Each reconcile gets its object's tenant's credentials only (the controller scopes them).
    world.tools.credentials = ConfiguredCredentials({"team-b/team-b-aws": config}).for_tenant("team-a")
    m = machine(world)
    m.spec.credential_ref = "team-b-aws"  # m is team-a's
    with pytest.raises(PermanentError, match="tenant 'team-a' has no credential 'team-b-aws'"):
        await provider(world.moto.url).create_interface(context(world, m))
    # With the platform's own identity a machine goes only where its cluster is.
    elsewhere = machine(world)
    elsewhere.spec.aws.subnet_id = "subnet-0123456789abcdef0"
    with pytest.raises(PermanentError, match="uses its cluster's subnets only"):
        await provider(world.moto.url).create_interface(context(world, elsewhere))
    strict = provider(world.moto.url, default_credentials=False)
    with pytest.raises(PermanentError, match="an AWS credential is required"):
        await strict.create_interface(context(world, machine(world)))


async def test_a_cluster_status_naming_another_network_sends_no_node_there(world: World) -> None:
    # A tenant may hold update-status (a role a platform administrator wrote, an external
    # authorizer) and write its cluster's status. With the platform's own AWS
    # identity, status.aws naming another cluster's subnet and node group must not put a node
    # into that network: they are checked against the tags EnsureNetwork gave this cluster's.
    ec2 = world.ec2
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="nodes", Description="nodes", VpcId=vpc)["GroupId"]
    victim = tags.of("tke", "team-b", "shop", str(uuid.uuid4()), "node")
    ec2.create_tags(Resources=[subnet, group], Tags=tags.aws(victim))
    p = provider(world.moto.url)

    world.cluster.status.aws.subnets[0].id = subnet
    with pytest.raises(PermanentError, match=f"subnet {subnet} is not this cluster's"):
        await p.create_interface(context(world, machine(world)))
    del world.cluster.status.aws.subnets[:]
    world.cluster.status.aws.subnets.add(id=subnet, zone="us-east-1a", cidr="10.40.1.0/24")
    world.cluster.status.aws.node_security_group_id = group
    m = machine(world)
    m.spec.aws.subnet_id = subnet  # "its cluster's", as the forged status says
    with pytest.raises(PermanentError, match="with the platform's AWS credentials"):
        await p.create_interface(context(world, m))
    found = ec2.describe_network_interfaces(Filters=[{"Name": "subnet-id", "Values": [subnet]}])
    assert found["NetworkInterfaces"] == []


async def test_a_provider_id_naming_another_instance_reads_nothing_of_it(world: World) -> None:
    # status.provider_id is also the tenant's to write: the platform describes the instance it
    # names with its own identity, and must not copy another machine's addresses into it.
    p = provider(world.moto.url)
    other = machine(world, "other")
    await run_steps(p.create_steps[:2], context(world, other))
    [instance] = instances(world.ec2, **{tags.MACHINE_UID: other.metadata.uid})
    m = machine(world, "w2")
    m.status.provider_id = other.status.provider_id
    for step in (p.wait_running, p.check_health):
        with pytest.raises(PermanentError, match=f"instance {instance['InstanceId']} .* is not this machine's"):
            await step(context(world, m))
    assert not any(a.address == instance["PrivateIpAddress"] for a in m.status.addresses)


def test_the_spec_is_checked_before_it_is_stored() -> None:
    p = AWSMachineProvider()
    m = machine_pb2.Machine()
    m.spec.type = "aws"
    assert [v.field for v in p.validate(m)] == ["machine.spec.aws"]
    m.spec.ip = "10.0.0.5"
    m.spec.role = machine_pb2.MACHINE_ROLE_MASTER
    m.spec.aws.instance_type = "huge"
    m.spec.aws.image_id = "ami-0123456789abcdef0"
    m.spec.aws.security_group_ids.append("group-1")
    m.spec.aws.root_volume.size_gib = 4
    m.spec.aws.root_volume.type = "magnetic"
    assert sorted(v.field for v in p.validate(m)) == sorted(
        [
            "machine.spec.aws.instance_type",
            "machine.spec.aws.security_group_ids[0]",
            "machine.spec.aws.root_volume.size_gib",
            "machine.spec.aws.root_volume.type",
            "machine.spec.ip",
            "machine.spec.role",
        ]
    )
