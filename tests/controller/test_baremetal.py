"""The baremetal providers end to end: real sshd servers (Debian's openssh-server, installed
by the fixture when missing) on loopback addresses play the machines; the controller runs the
steps over SSH, really writing files and running commands there.

Kubernetes binaries are not available here, so the install, join, drain, reset and health
commands are small stand-ins (they check that the platform's files are in place, write a
marker, and append to a log). Everything the platform generates is checked for real: the
certificates verify against the cluster CA with the right SANs, the kubeconfigs parse and
point at the right address, kubeadm's configuration carries the extra args.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import field_mask_pb2

from tests.support.apiserver import Running
from tests.support.controller import controller_config, credentials_published, publish_credentials
from tests.support.sshd import Machines, SSHServer, keypair, ssh_machines
from tests.support.waiting import wait_for
from tke.internal.controller.config import ProviderConfig
from tke.internal.controller.manager import Controller
from tke.internal.controller.progress import TRUE, find
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.provider.ssh import SSHOptions
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, event_pb2, event_pb2_grpc, machine_pb2

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

NODE_NAME = 'echo "node-$(echo "$SSH_CONNECTION" | cut -d" " -f3 | tr . -)"'
# Stand-ins for the operator's commands (no Kubernetes binaries here).
CLUSTER_OPTIONS: dict[str, Any] = {
    "install_commands": [
        'test -s "$TKE_PKI_DIR/apiserver.crt" && test -s "$TKE_CONFIG_DIR/admin.conf"',
        'echo "$TKE_VERSION" > "$TKE_CONFIG_DIR/stand-in-apiserver"',
        'echo "install $TKE_NODE_NAME $TKE_ROLE" >> "$TKE_CONFIG_DIR/../install.log"',
    ],
    "health_command": 'test -f "$TKE_CONFIG_DIR/stand-in-apiserver"',
    "upgrade_commands": ['echo "$TKE_VERSION" > "$TKE_CONFIG_DIR/stand-in-apiserver"'],
    "teardown_commands": ['echo teardown >> "$TKE_CONFIG_DIR/../teardown.log"', 'rm -rf "$TKE_CONFIG_DIR"'],
    "node_name_command": NODE_NAME,
}
MACHINE_OPTIONS: dict[str, Any] = {
    "join_commands": [
        'test -s "$TKE_CONFIG_DIR/kubelet.conf" && test -s "$TKE_CONFIG_DIR/kubeadm-join.yaml"',
        'echo joined > "$TKE_KUBELET_DIR/stand-in-kubelet"',
    ],
    "health_command": 'test -f "$TKE_KUBELET_DIR/stand-in-kubelet"',
    "drain_commands": ['echo "drain $TKE_NODE_NAME" >> "$TKE_CONFIG_DIR/../drain.log"'],
    "reset_commands": ['rm -f "$TKE_KUBELET_DIR/stand-in-kubelet"', 'echo reset >> "$TKE_CONFIG_DIR/../reset.log"'],
    "upgrade_commands": ['echo "upgrade $TKE_NODE_NAME $TKE_VERSION" >> "$TKE_CONFIG_DIR/../upgrade.log"'],
    "node_name_command": NODE_NAME,
}


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    with ssh_machines(tmp_path, 2) as m:
        yield m


@contextlib.asynccontextmanager
async def controller(api: Running, etcd_config: EtcdConfig, m: Machines, **changes: Any) -> AsyncIterator[None]:
    config = controller_config(
        api.address,
        etcd_config,
        credentials={"default/test-key": CredentialConfig(private_key_file=str(m.key.private_key_file))},
        ssh=SSHOptions(known_hosts_file=str(m.known_hosts), connect_attempts=2, connect_timeout=5),
        cluster_providers={
            "baremetal": ProviderConfig(options={**CLUSTER_OPTIONS, "root_dir": m.root_dir}),
        },
        machine_providers={
            "baremetal": ProviderConfig(options={**MACHINE_OPTIONS, "root_dir": m.root_dir}),
        },
    )
    config = replace(config, **changes)
    task = asyncio.create_task(Controller(config).run())
    try:
        await credentials_published(etcd_config, "default/test-key")
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def baremetal_cluster(name: str, master: SSHServer) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name = name
    c.spec.type = "baremetal"
    c.spec.version = "1.30.2"
    c.spec.network.pod_cidr = "10.244.0.0/16"
    c.spec.network.service_cidr = "10.96.0.0/12"
    c.spec.machines.add(ip=master.host, ssh_port=master.port, credential_ref="test-key", labels={"zone": "a"})
    c.spec.extra_args["kube-apiserver"].args["audit-log-maxage"] = "30"
    c.spec.extra_args["kubelet"].args["max-pods"] = "200"
    return c


def worker(name: str, cluster_name: str, server: SSHServer) -> machine_pb2.Machine:
    m = machine_pb2.Machine()
    m.metadata.name = name
    m.spec.cluster_name = cluster_name
    m.spec.type = "baremetal"
    m.spec.ip = server.host
    m.spec.ssh_port = server.port
    m.spec.credential_ref = "test-key"
    m.spec.role = machine_pb2.MACHINE_ROLE_WORKER
    m.spec.labels["pool"] = "general"
    m.spec.taints.add(key="dedicated", value="batch", effect="NoSchedule")
    return m


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _client_of(config: dict[str, Any]) -> x509.Certificate:
    return _cert(base64.b64decode(config["users"][0]["user"]["client-certificate-data"]))


async def test_a_baremetal_cluster_and_worker_are_installed_over_ssh_then_torn_down(
    api: Running, etcd_config: EtcdConfig, machines: Machines
) -> None:
    master, node = machines.servers
    await publish_credentials(etcd_config, "default/test-key")  # as the controller, before it starts here
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal_cluster("prod", master)))
    await api.machines.Create(machine_pb2.CreateMachineRequest(machine=worker("w1", "prod", node)))

    async def running(kind: str, name: str) -> Any:
        if kind == "cluster":
            obj: Any = await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name))
            return obj if obj.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING else None
        obj = await api.machines.Get(machine_pb2.GetMachineRequest(name=name))
        return obj if obj.status.phase == machine_pb2.MACHINE_PHASE_RUNNING else None

    async with controller(api, etcd_config, machines):
        c = await wait_for(lambda: running("cluster", "prod"), within=60)
        m = await wait_for(lambda: running("machine", "w1"), within=60)

        # -- the cluster's conditions and status --
        for step in ("Preflight", "EnsureClusterCA", "EnsureCertificates", "EnsureKubeconfigs", "WriteConfiguration"):
            cond = find(c.status.conditions, step)
            assert cond is not None and cond.status == TRUE, step
        for step in ("InstallControlPlane", "WaitHealthy", "RecordAddresses"):
            cond = find(c.status.conditions, step)
            assert cond is not None and cond.status == TRUE, step
        assert [(a.type, a.host, a.port) for a in c.status.addresses] == [
            ("Advertise", master.host, 6443),
            ("Internal", master.host, 6443),
        ]
        assert c.status.version == "1.30.2"

        # -- what the platform generated on the master, checked for real --
        root = machines.root_of(master)
        pki = root / "etc/kubernetes/pki"
        ca = _cert((pki / "ca.crt").read_bytes())
        apiserver = _cert((pki / "apiserver.crt").read_bytes())
        apiserver.verify_directly_issued_by(ca)
        sans = apiserver.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        node_name = "node-" + master.host.replace(".", "-")
        assert {"kubernetes", "kubernetes.default.svc.cluster.local", node_name} <= set(
            sans.get_values_for_type(x509.DNSName)
        )
        assert {ipaddress.ip_address(x) for x in ("10.96.0.1", master.host, "127.0.0.1")} <= set(
            sans.get_values_for_type(x509.IPAddress)
        )
        usages = apiserver.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.SERVER_AUTH in usages
        etcd_server = _cert((pki / "etcd/server.crt").read_bytes())
        etcd_server.verify_directly_issued_by(_cert((pki / "etcd/ca.crt").read_bytes()))
        assert (pki / "sa.key").stat().st_mode & 0o777 == 0o600
        assert b"PUBLIC KEY" in (pki / "sa.pub").read_bytes()

        admin = yaml.safe_load((root / "etc/kubernetes/admin.conf").read_text())
        assert admin["clusters"][0]["cluster"]["server"] == f"https://{master.host}:6443"
        assert (
            base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])
            == (pki / "ca.crt").read_bytes()
        )
        admin_cert = _client_of(admin)
        admin_cert.verify_directly_issued_by(ca)
        assert admin_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubernetes-admin"
        assert admin_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
        for conf in ("controller-manager.conf", "scheduler.conf", "kubelet.conf"):
            doc = yaml.safe_load((root / "etc/kubernetes" / conf).read_text())
            _client_of(doc).verify_directly_issued_by(ca)

        docs = list(yaml.safe_load_all((root / "etc/kubernetes/kubeadm-config.yaml").read_text()))
        kinds = {d["kind"]: d for d in docs}
        assert kinds["ClusterConfiguration"]["apiServer"]["extraArgs"] == {"audit-log-maxage": "30"}
        assert kinds["ClusterConfiguration"]["networking"]["serviceSubnet"] == "10.96.0.0/12"
        assert kinds["ClusterConfiguration"]["kubernetesVersion"] == "v1.30.2"
        assert kinds["InitConfiguration"]["nodeRegistration"]["kubeletExtraArgs"]["max-pods"] == "200"
        assert kinds["InitConfiguration"]["nodeRegistration"]["kubeletExtraArgs"]["node-labels"] == "zone=a"
        assert kinds["KubeletConfiguration"]["clusterDNS"] == ["10.96.0.10"]
        assert kinds["KubeProxyConfiguration"]["clusterCIDR"] == "10.244.0.0/16"
        assert (root / "etc/install.log").read_text() == f"install {node_name} master\n"

        # -- the worker --
        assert m.status.node_info.kernel_version and m.status.node_info.architecture
        assert m.status.node_info.kubelet_version == "1.30.2"
        assert ("InternalIP", node.host) in [(a.type, a.address) for a in m.status.addresses]
        nroot = machines.root_of(node)
        kubelet = yaml.safe_load((nroot / "etc/kubernetes/kubelet.conf").read_text())
        assert kubelet["clusters"][0]["cluster"]["server"] == f"https://{master.host}:6443"
        kubelet_cert = _client_of(kubelet)
        kubelet_cert.verify_directly_issued_by(ca)
        worker_name = "node-" + node.host.replace(".", "-")
        assert kubelet_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"system:node:{worker_name}"
        join = next(yaml.safe_load_all((nroot / "etc/kubernetes/kubeadm-join.yaml").read_text()))
        assert join["nodeRegistration"]["kubeletExtraArgs"]["node-labels"] == "pool=general"
        assert join["nodeRegistration"]["taints"] == [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]
        assert (nroot / "var/lib/kubelet/stand-in-kubelet").exists()

        events = event_pb2_grpc.EventServiceStub(api.channel)
        request = event_pb2.ListEventsRequest(involved_object_kind="Machine", involved_object_name="w1")
        listed = await events.List(request)
        assert "StepSucceeded" in {e.spec.reason for e in listed.items}

        # -- upgrade: the control plane first, then the worker follows the cluster's version --
        change = cluster_pb2.Cluster()
        change.metadata.name = "prod"
        change.spec.version = "1.31.0"
        mask = field_mask_pb2.FieldMask(paths=["spec.version"])
        await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=change, update_mask=mask))

        async def upgraded() -> bool:
            got = await api.machines.Get(machine_pb2.GetMachineRequest(name="w1"))
            return got.status.node_info.kubelet_version == "1.31.0"

        await wait_for(upgraded, within=60)
        c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="prod"))
        assert c.status.version == "1.31.0" and c.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING
        assert (root / "etc/kubernetes/stand-in-apiserver").read_text() == "1.31.0\n"
        assert (nroot / "etc/upgrade.log").read_text() == f"upgrade {worker_name} 1.31.0\n"
        upgrade = find(c.status.conditions, "UpgradeControlPlane")
        assert upgrade is not None and upgrade.status == TRUE

        # -- delete: the worker is drained and reset first, then the control plane torn down --
        await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="prod"))

        async def gone() -> bool:
            try:
                await api.clusters.Get(cluster_pb2.GetClusterRequest(name="prod"))
            except grpc.aio.AioRpcError as err:
                return err.code() == grpc.StatusCode.NOT_FOUND
            return False

        await wait_for(gone, within=60)
    assert (root / "etc/drain.log").read_text() == f"drain {worker_name}\n"
    assert (nroot / "etc/reset.log").read_text() == "reset\n"
    assert not (nroot / "var/lib/kubelet/stand-in-kubelet").exists()
    assert (root / "etc/teardown.log").read_text() == "teardown\n"
    assert not (root / "etc/kubernetes").exists()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.machines.Get(machine_pb2.GetMachineRequest(name="w1"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_unknown_host_key_fails_the_cluster_permanently(
    api: Running, etcd_config: EtcdConfig, machines: Machines, tmp_path: Path
) -> None:
    master = machines.servers[0]
    _, other = keypair(tmp_path, "not-the-host-key")
    machines.known_hosts.write_text(f"[{master.host}]:{master.port} {other}\n")
    await publish_credentials(etcd_config, "default/test-key")
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal_cluster("spoofed", master)))

    async def failed() -> cluster_pb2.Cluster | None:
        c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="spoofed"))
        return c if c.status.phase == cluster_pb2.CLUSTER_PHASE_FAILED else None

    async with controller(api, etcd_config, machines):
        c = await wait_for(failed, within=30)
    assert c.status.reason == "StepFailed"
    assert "host key" in c.status.message and "Preflight" in c.status.message
    assert not machines.root_of(master).exists()  # nothing was written to an untrusted machine
