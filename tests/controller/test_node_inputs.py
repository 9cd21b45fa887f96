"""The guards where a machine's address and node name reach commands and files: an object
stored before the apiserver refused zoned addresses, or a machine printing a crafted host
name, fails for good instead of writing what it carries into haproxy.cfg, a path or a shell
command."""

from __future__ import annotations

import uuid

import pytest

from tests.support.fake_ssh import FakeChannel, FakeDialer
from tests.support.provider_steps import MemoryCredentialStore
from tke.internal.provider import nodes
from tke.internal.provider.contract import ClusterContext, Tools
from tke.internal.provider.credentials import ConfiguredCredentials
from tke.internal.provider.errors import PermanentError
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.ssh import Result, Target
from tke.platform.v1 import cluster_pb2, machine_pb2
from tke.plugins.cluster_providers.baremetal import BaremetalClusterProvider

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


async def test_teardown_logs_in_only_to_masters_the_apiserver_holds_for_the_cluster() -> None:
    # A status.control_plane member without a credential is not held by the apiserver (a
    # tenant may write status): teardown never logs in to it.
    c = cluster_pb2.Cluster()
    c.metadata.name, c.metadata.uid, c.metadata.tenant_id = "b-st", str(uuid.uuid4()), "team-b"
    c.spec.type, c.spec.version = "baremetal", "1.30.2"
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    c.spec.machines.add(ip="192.0.2.91", credential_ref="ops-key")
    c.status.control_plane.add(
        node_name="gone", machine=cluster_pb2.ClusterMachine(ip="192.0.2.93", credential_ref="k")
    )
    c.status.control_plane.add(node_name="forged", machine=cluster_pb2.ClusterMachine(ip="192.0.2.90"))
    dialer = FakeDialer(answers={"hostname": Result(0, "node\n", "")})
    tools = Tools(
        dialer=dialer,
        credentials=ConfiguredCredentials({}).for_tenant("team-b"),
        cluster_credentials=MemoryCredentialStore(),
    )
    await BaremetalClusterProvider().teardown(ClusterContext(obj=c, machines=[], tools=tools))
    assert sorted(dialer.machines) == ["192.0.2.91", "192.0.2.93"]
    assert "kubeadm reset -f" in dialer.machines["192.0.2.93"].commands[-3]
