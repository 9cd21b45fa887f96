"""boto3 is optional (`pip install tke[aws]`): with it hidden from the processes, the apiserver
starts and validates aws specs through the aws providers, the controller starts with every
installed provider (aws among them) and lists them, and tke-ipamd starts with an aws-eni
provider configured, which then refuses its calls saying what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.support.controller import ControllerProcess
from tests.support.ipamd_daemon import IpamdProcess
from tests.support.ports import free_port
from tests.support.rpc import health_check
from tests.support.waiting import wait_for
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

pytestmark = pytest.mark.timeout(120)

HIDDEN = 'raise ImportError("hidden by the test: the tke[aws] extra is not installed")\n'


@pytest.fixture
def without_boto3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PYTHONPATH for child processes in which `import boto3` (and botocore) fails."""
    hidden = tmp_path / "hidden"
    for package in ("boto3", "botocore"):
        (hidden / package).mkdir(parents=True)
        (hidden / package / "__init__.py").write_text(HIDDEN)
    monkeypatch.setenv("PYTHONPATH", str(hidden))
    check = subprocess.run([sys.executable, "-c", "import boto3"], capture_output=True, text=True, check=False)
    assert check.returncode == 1 and "hidden by the test" in check.stderr
    return hidden


def start_apiserver(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        binary = Path(sys.executable).parent / "tke-apiserver"
        return subprocess.Popen([str(binary), "--config", str(config)], stdout=log, stderr=log, env=os.environ.copy())


async def test_the_platform_starts_and_lists_its_providers_without_boto3(
    without_boto3: Path, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    port = free_port()
    prefix = etcd_config.prefix
    endpoints = ", ".join(f'"{e}"' for e in etcd_config.endpoints)
    config = tmp_path / "apiserver.toml"
    config.write_text(
        f'metrics_address = ""\n[listen]\naddress = "127.0.0.1:{port}"\n'
        f'[etcd]\nendpoints = [{endpoints}]\nprefix = "{prefix}"\n'
    )
    apiserver = start_apiserver(config, tmp_path / "apiserver.log")
    controller = None
    ipamd = None
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        health = health_check(channel)

        async def serving() -> bool:
            assert apiserver.poll() is None, (tmp_path / "apiserver.log").read_text()
            try:
                answer = await health(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

        await wait_for(serving, within=30, what="the apiserver serving")
        # The aws cluster provider validates without boto3: a spec without its aws part is refused.
        clusters = cluster_pb2_grpc.ClusterServiceStub(channel)
        c = cluster_pb2.Cluster()
        c.metadata.name = "prod"
        c.spec.type, c.spec.version = "aws", "1.31.2"
        c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cluster.spec.aws" in str(err.value.details())

        # The controller loads every installed provider, aws too, and says which.
        controller = ControllerProcess(
            tmp_path,
            "controller",
            {
                "apiserver": {"address": f"127.0.0.1:{port}", "token_env": ""},
                "etcd": {"endpoints": list(etcd_config.endpoints), "prefix": prefix},
                "leader": {"ttl": 3},
            },
        )
        controller.start()
        line = await wait_for(
            lambda: next((x for x in controller.log().splitlines() if "providers: clusters" in x), None),
            within=30,
            what="the controller's providers line",
        )
        assert "aws" in line.split("clusters")[1].split(";")[0] and "aws" in line.split("machines")[1]
        assert controller.alive() and "Traceback" not in controller.log()

        # tke-ipamd starts with aws-eni configured; using it says what to install.
        extra = '[providers.cloud]\nplugin = "aws-eni"\n[providers.cloud.options]\nregion = "us-east-1"\n'
        ipamd = IpamdProcess(tmp_path, endpoints=list(etcd_config.endpoints), prefix=prefix + "/ipam-nob", extra=extra)
        ipamd.start()
        async with grpc.aio.insecure_channel(ipamd.target) as ipam_channel:
            stub = ipam_pb2_grpc.IPAMServiceStub(ipam_channel)
            pool = ipam_pb2.Pool(
                name="vpc-a", cidr="10.40.1.0/24", provider=ipam_pb2.PoolProvider(name="cloud", subnet_id="subnet-1")
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=pool))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "pip install 'tke[aws]'" in str(err.value.details())
        await channel.close()
    finally:
        if ipamd is not None:
            ipamd.stop()
        if controller is not None:
            controller.stop()
        apiserver.terminate()
        apiserver.wait(30)
