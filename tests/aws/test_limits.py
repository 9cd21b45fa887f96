"""The operator's spending limits of the aws providers (plugins/aws/specs.py): what one tenant
may launch in the accounts the operator pays for. Each rule refuses its field with
INVALID_ARGUMENT naming what is allowed and the option that says so; what is allowed passes;
the apiserver refuses with the limits it is configured with; and the controller, configured
more strictly than the apiserver that stored an object, fails the object's first step and
launches nothing in moto's EC2."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support.apiserver import local_config, start, stop
from tests.support.aws import Moto, an_image, aws_cluster
from tests.support.controller import controller_config
from tests.support.rpc import bad_request_fields, detail_of
from tests.support.waiting import wait_for
from tke.internal.controller.manager import Controller
from tke.internal.plugin import loader
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, machine_pb2
from tke.plugins.aws import specs, tags
from tke.plugins.cluster_providers.aws import AWSClusterProvider
from tke.plugins.machine_providers.aws import AWSMachineProvider

pytestmark = pytest.mark.timeout(120)
IMAGE = "ami-0123456789abcdef0"
MASTER = "cluster.spec.aws.control_plane.machine"


def worker(instance_type: str = "t3.medium", **volume: Any) -> machine_pb2.Machine:
    m = machine_pb2.Machine()
    m.metadata.name = "w1"
    m.spec.cluster_name, m.spec.type = "prod", "aws"
    m.spec.role = machine_pb2.MACHINE_ROLE_WORKER
    m.spec.aws.instance_type, m.spec.aws.image_id = instance_type, IMAGE
    for key, value in volume.items():
        setattr(m.spec.aws.root_volume, key, value)
    return m


def refusals(violations: list[Any]) -> dict[str, str]:
    return {v.field: v.description for v in violations}


def test_by_default_a_tenant_launches_general_purpose_instances_of_at_most_8_vcpus() -> None:
    p = AWSMachineProvider()
    for allowed in ("t3.micro", "t3.2xlarge", "t3a.large", "m6i.large", "m5.2xlarge", "m7i.xlarge"):
        assert p.validate(worker(allowed)) == [], allowed
    for refused in ("p5.48xlarge", "u-24tb1.metal", "m6i.4xlarge", "m6i.metal", "r7i.large", "g5.xlarge"):
        got = refusals(p.validate(worker(refused)))
        assert list(got) == ["machine.spec.aws.instance_type"], refused
        assert got["machine.spec.aws.instance_type"] == (
            f"{refused!r} is not allowed here; allowed: {', '.join(specs.DEFAULT_INSTANCE_TYPES)} "
            "(aws option allowed_instance_types)"
        )


def test_root_volumes_are_general_purpose_ssd_of_at_most_the_operators_size() -> None:
    p = AWSMachineProvider()
    assert p.validate(worker(size_gib=200, type="gp3", encrypted=True)) == []
    assert p.validate(worker(size_gib=50, type="gp2")) == []
    got = refusals(p.validate(worker(size_gib=16384, type="io2")))
    assert got == {
        "machine.spec.aws.root_volume.size_gib": "16384 GiB is more than allowed here: at most 200 "
        "(aws option max_root_volume_gib)",
        "machine.spec.aws.root_volume.type": "'io2' is not allowed here; allowed: gp3, gp2 "
        "(aws option allowed_volume_types)",
    }
    # Without a type the platform maps the volume as gp3: allowed only where gp3 is.
    strict = AWSMachineProvider(allowed_volume_types=["gp2"], max_root_volume_gib=1000)
    assert list(refusals(strict.validate(worker(size_gib=500)))) == ["machine.spec.aws.root_volume.type"]
    assert strict.validate(worker(size_gib=1000, type="gp2")) == []


def test_the_operator_widens_and_narrows_the_instance_types() -> None:
    wide = AWSMachineProvider(allowed_instance_types=["*"])
    assert wide.validate(worker("p5.48xlarge")) == []
    narrow = AWSMachineProvider(allowed_instance_types=["c7g.*", "m6i.large"])
    assert narrow.validate(worker("c7g.16xlarge")) == [] and narrow.validate(worker("m6i.large")) == []
    # A family wildcard is that family only, not every family starting with its name.
    for refused in ("m6i.xlarge", "c7gn.large", "t3.medium"):
        got = refusals(narrow.validate(worker(refused)))
        assert got["machine.spec.aws.instance_type"].endswith(
            "allowed: c7g.*, m6i.large (aws option allowed_instance_types)"
        )


def test_a_cluster_s_masters_count_and_load_balancer_are_limited_too() -> None:
    p = AWSClusterProvider(max_control_plane_count=3, allow_load_balancer=False)
    c = aws_cluster(IMAGE)  # 3 masters of m5.large behind a load balancer
    c.spec.aws.control_plane.machine.instance_type = "p5.48xlarge"
    c.spec.aws.control_plane.machine.root_volume.size_gib = 4096
    assert set(refusals(p.validate(c))) == {
        "cluster.spec.aws.load_balancer",
        f"{MASTER}.instance_type",
        f"{MASTER}.root_volume.size_gib",
    }
    c.spec.aws.control_plane.count = 5
    got = refusals(p.validate(c))
    assert got["cluster.spec.aws.control_plane.count"] == (
        "5 masters are more than allowed here: at most 3 (aws option max_control_plane_count)"
    )
    assert "aws option allow_load_balancer" in got["cluster.spec.aws.load_balancer"]
    allowed = aws_cluster(IMAGE)
    assert AWSClusterProvider().validate(allowed) == []
    allowed.spec.aws.load_balancer = False
    allowed.spec.aws.control_plane.count = 1
    assert p.validate(allowed) == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"allowed_instance_types": []}, "allowed_instance_types is empty"),
        ({"allowed_instance_types": ["m6i*"]}, "'m6i*' is not an instance type, a family such as 'm6i.*', or '*'"),
        ({"allowed_instance_types": ["*.large"]}, "'*.large' is not an instance type"),
        ({"max_root_volume_gib": 20000}, "max_root_volume_gib must be between 8 and 16384"),
        ({"allowed_volume_types": ["magnetic"]}, "'magnetic' is not one of gp3"),
        ({"max_control_plane_count": 2}, "max_control_plane_count must be 1, 3 or 5"),
    ],
)
def test_limits_that_make_no_sense_stop_the_provider_from_starting(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(loader.PluginError, match="aws provider options: .*" + problem.replace("*", r"\*")):
        loader.load("tke.cluster_providers", "aws", options)


async def test_the_apiserver_refuses_with_the_limits_it_is_configured_with(etcd_config: EtcdConfig) -> None:
    limits = {"allowed_instance_types": ["c7g.*"], "max_root_volume_gib": 100}
    running = await start(
        local_config(
            etcd_config,
            cluster_providers={"aws": ProviderConfig(options=limits)},
            machine_providers={"aws": ProviderConfig(options=limits)},
        )
    )
    try:
        c = aws_cluster(IMAGE)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(err.value) == [f"{MASTER}.instance_type"]
        [violation] = detail_of(err.value, error_details_pb2.BadRequest).field_violations
        assert violation.description == (
            "'m5.large' is not allowed here; allowed: c7g.* (aws option allowed_instance_types)"
        )
        c.spec.aws.control_plane.machine.instance_type = "c7g.xlarge"
        await running.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))

        m = worker("c7g.large", size_gib=500)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.machines.Create(machine_pb2.CreateMachineRequest(machine=m))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(err.value) == ["machine.spec.aws.root_volume.size_gib"]
        m.spec.aws.root_volume.size_gib = 100
        await running.machines.Create(machine_pb2.CreateMachineRequest(machine=m))
    finally:
        await stop(running)


async def test_an_apiserver_without_configured_limits_applies_the_defaults(etcd_config: EtcdConfig) -> None:
    running = await start(local_config(etcd_config))
    try:
        c = aws_cluster(IMAGE)
        c.metadata.name = "gpu"
        c.spec.aws.control_plane.machine.instance_type = "p5.48xlarge"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(err.value) == [f"{MASTER}.instance_type"]
    finally:
        await stop(running)


async def test_the_controller_refuses_a_cluster_stored_under_looser_limits_and_launches_nothing(
    etcd_config: EtcdConfig, moto: Moto
) -> None:
    # An apiserver that allows everything stored the cluster (before the operator set limits,
    # or configured otherwise); the controller has the default limits.
    everything = {"allowed_instance_types": ["*"], "max_root_volume_gib": 16384}
    running = await start(local_config(etcd_config, cluster_providers={"aws": ProviderConfig(options=everything)}))
    c = aws_cluster(an_image(moto.client("ec2")))
    c.metadata.name = "pricey"
    c.spec.aws.control_plane.machine.instance_type = "p5.48xlarge"
    c.spec.aws.control_plane.machine.root_volume.size_gib = 2000
    options = {"endpoint_url": moto.url, "region": "us-east-1"}
    config = controller_config(running.address, etcd_config, cluster_providers={"aws": ProviderConfig(options=options)})
    task = asyncio.create_task(Controller(config).run())
    try:
        await running.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))

        async def failed() -> cluster_pb2.Cluster | None:
            got = await running.clusters.Get(cluster_pb2.GetClusterRequest(name="pricey"))
            return got if got.status.phase == cluster_pb2.CLUSTER_PHASE_FAILED else None

        got = await wait_for(failed, within=60, what="the cluster Failed")
        assert "EnsureNetwork" in got.status.message
        assert f"{MASTER}.instance_type: 'p5.48xlarge' is not allowed here" in got.status.message
        assert f"{MASTER}.root_volume.size_gib: 2000 GiB is more than allowed here" in got.status.message
        ec2 = moto.client("ec2")
        made = {tags.PLATFORM: "tke"}
        assert ec2.describe_vpcs(Filters=tags.filters(made))["Vpcs"] == []
        assert ec2.describe_network_interfaces(Filters=tags.filters(made))["NetworkInterfaces"] == []
        assert ec2.describe_instances()["Reservations"] == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stop(running)
