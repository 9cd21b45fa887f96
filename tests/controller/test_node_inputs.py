"""The guards where a machine's address and node name reach commands and files: an object
stored before the apiserver refused zoned addresses, or a machine printing a crafted host
name, fails for good instead of writing what it carries into haproxy.cfg, a path or a shell
command."""

from __future__ import annotations

import pytest

from tests.support.fake_ssh import FakeChannel
from tke.internal.provider import nodes
from tke.internal.provider.errors import PermanentError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.ssh import Result, Target
from tke.platform.v1 import cluster_pb2, machine_pb2

ZONED = "fe80::1%x\nserver evil 203.0.113.9:6443 check"


def test_a_zoned_address_is_no_ssh_target() -> None:
    master = cluster_pb2.ClusterMachine(ip=ZONED, credential_ref="ops-key")
    with pytest.raises(PermanentError, match="not a bare IP address"):
        nodes.master_target(master)
    worker = machine_pb2.Machine()
    worker.spec.ip = "2001:db8::7%$(id)"
    with pytest.raises(PermanentError, match="not a bare IP address"):
        nodes.machine_target(worker)
    worker.spec.ip = "2001:db8::7"
    assert nodes.machine_target(worker).host == "2001:db8::7"


@pytest.mark.parametrize("printed", ["evil\nserver x 203.0.113.9:6443", "node_1", "a b", "-node"])
async def test_a_host_name_that_is_no_node_name_fails_for_good(printed: str) -> None:
    channel = FakeChannel(Target("192.0.2.1"), answers={"hostname": Result(0, printed + "\n", "")})
    with pytest.raises(PermanentError, match="not a node name"):
        await nodes.node_name(channel)


async def test_a_host_name_is_lower_cased() -> None:
    channel = FakeChannel(Target("192.0.2.1"), answers={"hostname": Result(0, "Master-1.Example.COM\n", "")})
    assert await nodes.node_name(channel) == "master-1.example.com"


def test_a_service_range_without_a_dns_address_fails_for_good() -> None:
    # Stored before the apiserver checked the range's size: a clear step failure, not an
    # IndexError retried with a traceback in the log.
    c = cluster_pb2.Cluster()
    c.spec.version = "1.31.2"
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/32"
    with pytest.raises(PermanentError, match="too small"):
        kubecfg.kubelet_configuration(c)
    c.spec.network.service_cidr = "10.96.0.0/28"
    assert kubecfg.kubelet_configuration(c)["clusterDNS"] == ["10.96.0.10"]
