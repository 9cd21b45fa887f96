"""The platform's Kubernetes access layer (tke.internal.provider.kube) against the stand-in:
kubeconfigs of every credential kind, health and version, Node-derived machine status, drains
that PodDisruptionBudgets hold back, idempotent apply, and failures mapped to provider errors
with messages that say what is wrong."""

from __future__ import annotations

import asyncio
import base64
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import DaemonSet, ReplicaSet
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from tests.support.kube import objects
from tests.support.kube.running import StandIn
from tests.support.pki import TestCA
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import drain, node_status
from tke.internal.provider.kube.access import ClusterAccess, from_kubeconfig, in_cluster
from tke.internal.provider.kube.api import ClusterAPI
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import machine_pb2

pytestmark = pytest.mark.timeout(60)


async def test_health_and_version(kube: StandIn, admin: ClusterAPI) -> None:
    assert await admin.version() == "1.30.2"
    assert (await admin.readiness()).ready
    kube.set_failing("etcd", "informer-sync")
    readiness = await admin.readiness()
    assert not readiness.ready and readiness.failed == ("etcd", "informer-sync")
    assert readiness.summary == "not ready: etcd, informer-sync failed"


async def test_every_kubeconfig_credential_kind(kube: StandIn, tmp_path: Path) -> None:
    async def whoami(access: ClusterAccess) -> str:
        async with ClusterAPI(access) as api:
            return await api.version()

    assert await whoami(from_kubeconfig(kube.kubeconfig(token="admin-token"))) == "1.30.2"
    assert await whoami(from_kubeconfig(kube.kubeconfig(user="someone"))) == "1.30.2"
    # Files relative to the kubeconfig's directory, and a token file.
    cert, key = kube.client_certificate("filer")
    (tmp_path / "c.crt").write_bytes(cert)
    (tmp_path / "c.key").write_bytes(key)
    (tmp_path / "ca.crt").write_bytes(kube.ca_pem)
    (tmp_path / "token").write_text("admin-token\n")
    doc = yaml.safe_load(kube.kubeconfig())
    doc["clusters"][0]["cluster"] = {"server": kube.url, "certificate-authority": "ca.crt"}
    doc["users"][0]["user"] = {"client-certificate": "c.crt", "client-key": "c.key"}
    assert await whoami(from_kubeconfig(yaml.safe_dump(doc), base_dir=tmp_path)) == "1.30.2"
    doc["users"][0]["user"] = {"tokenFile": str(tmp_path / "token")}
    assert from_kubeconfig(yaml.safe_dump(doc), base_dir=tmp_path).token == "admin-token"
    # An exec plugin (client.authentication.k8s.io/v1) that prints a token.
    plugin = tmp_path / "get-token"
    plugin.write_text(
        "#!/bin/sh\n"
        'case "$KUBERNETES_EXEC_INFO" in *\'"interactive": false\'*) ;; *) exit 3;; esac\n'
        'echo \'{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",'
        ' "status": {"token": "admin-token", "expirationTimestamp": "2999-01-01T00:00:00Z"}}\'\n'
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    doc["users"][0]["user"] = {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "interactiveMode": "Never"}
    }
    text = yaml.safe_dump(doc)
    with pytest.raises(PermanentError, match="exec credential plugins are not allowed"):
        from_kubeconfig(text, base_dir=tmp_path)
    access = from_kubeconfig(text, base_dir=tmp_path, allow_exec=True)
    async with ClusterAPI(access) as api:
        nodes = await api.nodes()  # a resource request: the token must be accepted
    assert nodes == []
    assert "admin-token" not in repr(access)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clusters": [{"name": "stand-in", "cluster": {"server": "https://h:1", "insecure-skip-tls-verify": True}}]},
         "insecure-skip-tls-verify is not accepted"),
        ({"current-context": "other"}, "context 'other' is not defined"),
        ({"users": [{"name": "me", "user": {"auth-provider": {"name": "gcp"}}}]},
         "auth-provider plugins are not supported"),
        ({"users": [{"name": "me", "user": {"client-certificate-data": "bm90"}}]}, "needs its key"),
        ({"users": [{"name": "me", "user": {"client-certificate": "relative.crt", "client-key": "k"}}]},
         "relative file 'relative.crt'"),
        ({"clusters": [{"name": "stand-in", "cluster": {"server": "http://h:1"}}]}, "must be https"),
    ],
)  # fmt: skip
def test_kubeconfigs_that_cannot_work_say_why(kube: StandIn, change: dict[str, Any], message: str) -> None:
    doc = yaml.safe_load(kube.kubeconfig(token="t"))
    doc.update(change)
    with pytest.raises(PermanentError, match=message):
        from_kubeconfig(yaml.safe_dump(doc))


async def test_failures_map_to_provider_errors(kube: StandIn, tmp_path: Path) -> None:
    async def version(access: ClusterAccess) -> str:
        async with ClusterAPI(access, timeout=2.0) as api:
            return await api.version()

    with pytest.raises(PermanentError, match=r"credential refused \(401\) for bearer token"):
        await version(from_kubeconfig(kube.kubeconfig(token="wrong")))
    # Another CA: the server's certificate is not trusted.
    other = from_kubeconfig(kube.kubeconfig(token="admin-token"))
    stranger = ClusterAccess(
        kube.url, ca_pem=Path(TestCA(tmp_path / "other").ca_file).read_bytes(), token="admin-token"
    )
    with pytest.raises(PermanentError, match="is not trusted"):
        await version(stranger)
    # Nobody listening: temporary.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TemporaryError, match=r"cannot reach https://127\.0\.0\.1"):
        await version(ClusterAccess(f"https://127.0.0.1:{port}", ca_pem=other.ca_pem, token="t"))
    # Allowed to read health, not nodes: 403 is permanent and says who and what.
    async with ClusterAPI(from_kubeconfig(kube.kubeconfig(token="viewer-token"))) as viewer:
        assert (await viewer.readiness()).ready
        with pytest.raises(PermanentError, match=r'User "viewer" cannot list resource "nodes".*\(403 Forbidden\)'):
            await viewer.nodes()
    # The server reports a failure: temporary, with the code.
    kube.set_failing("ping", "etcd")
    async with ClusterAPI(from_kubeconfig(kube.kubeconfig(token="admin-token"))) as api:
        assert (await api.readiness()).failed == ("ping", "etcd")


async def test_machine_status_comes_from_the_node(admin: ClusterAPI) -> None:
    await admin.client.create(from_dict(objects.node("worker-1", ip="10.1.0.7", kubelet="v1.30.4", role="worker")))
    node = await admin.node("worker-1")
    assert node is not None
    status = machine_pb2.MachineStatus()
    report = node_status.write_machine_status(node, status)
    assert status.node_info == machine_pb2.MachineSystemInfo(
        machine_id="machine-worker-1", system_uuid="uuid-worker-1", boot_id="boot-worker-1",
        kernel_version="6.1.0-21-amd64", os_image="Debian GNU/Linux 12 (bookworm)",
        container_runtime_version="containerd://1.7.13", kubelet_version="v1.30.4", architecture="amd64",
    )  # fmt: skip
    assert [(a.type, a.address) for a in status.addresses] == [("InternalIP", "10.1.0.7"), ("Hostname", "worker-1")]
    ready = next(c for c in status.conditions if c.type == "NodeReady")
    assert (ready.status, ready.reason) == (meta_pb2.CONDITION_STATUS_TRUE, "KubeletReady")
    assert ready.last_transition_time.ToJsonString() == "2024-06-01T09:00:00Z"
    assert {c.type for c in status.conditions} == {"NodeReady", "NodeMemoryPressure"}
    assert report.ready and report.roles == ("worker",) and report.internal_ip == "10.1.0.7"
    not_ready = objects.node("worker-1", ready=False)
    await admin.client.patch(Node.Status, "worker-1", {"status": not_ready["status"]}, patch_type=PatchType.MERGE)
    node = await admin.node("worker-1")
    assert node is not None
    report = node_status.write_machine_status(node, status)
    assert not report.ready and report.ready_reason == "KubeletNotReady: container runtime network not ready"
    assert next(c for c in status.conditions if c.type == "NodeReady").status == meta_pb2.CONDITION_STATUS_FALSE
    assert await admin.delete_node("worker-1") is True
    assert await admin.node("worker-1") is None
    assert await admin.delete_node("worker-1") is False


async def _workload(api: ClusterAPI, name: str, node: str, replicas: int) -> list[str]:
    """A ReplicaSet's pods on `node`, Running and Ready (as its controller and kubelet would
    make them)."""
    c: Any = api.client
    rs = (await c.create(from_dict(objects.replica_set(name, "default", replicas)))).to_dict()
    pods = [f"{name}-{i}" for i in range(replicas)]
    for pod in pods:
        await c.create(from_dict(objects.pod(pod, "default", node=node, app=name, owner=rs)))
        await c.patch(Pod.Status, pod, objects.RUNNING_READY, namespace="default", patch_type=PatchType.MERGE)
    return pods


async def test_drain_waits_for_the_budget_then_evicts(admin: ClusterAPI) -> None:
    c: Any = admin.client
    await c.create(from_dict(objects.node("n1")))
    await c.create(from_dict(objects.node("n2")))
    web = await _workload(admin, "web", "n1", 2)
    ds = (await c.create(from_dict(objects.daemon_set("logs", "default")))).to_dict()
    await c.create(from_dict(objects.pod("logs-n1", "default", node="n1", owner=ds)))
    mirror = objects.pod("etcd-n1", "default", node="n1")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    await c.create(from_dict(mirror))
    await c.create(from_dict(objects.budget("web", "default", "web", maxUnavailable=1)))

    async def replacement() -> None:
        """The ReplicaSet's controller and the kubelet: once one web pod is gone, a new one
        runs on n2 and becomes Ready, which lets the budget allow the next eviction."""
        async for event in admin.watch(Pod, namespace="default", resource_version=start, labels="app=web"):
            if event.type == "DELETED":
                break
        rs = (await c.get(ReplicaSet, "web", namespace="default")).to_dict()
        await c.create(from_dict(objects.pod("web-new", "default", node="n2", app="web", owner=rs)))
        await c.patch(Pod.Status, "web-new", objects.RUNNING_READY, namespace="default", patch_type=PatchType.MERGE)

    start = (await admin.list_objects(Pod, namespace="default"))[1]
    helper = asyncio.create_task(replacement())
    result = await drain.drain(admin, "n1", within=30, poll=0.1)
    await helper
    assert result.evicted == tuple(f"default/{p}" for p in web)
    assert result.skipped == ("default/etcd-n1", "default/logs-n1")
    node: Any = await admin.node("n1")
    assert node.spec.unschedulable is True
    left = sorted(str(p.metadata and p.metadata.name) for p in await admin.pods_on("n1"))
    assert left == ["etcd-n1", "logs-n1"]
    assert await admin.get(DaemonSet, "logs", "default") is not None


async def test_a_drain_that_cannot_finish_names_the_pods(admin: ClusterAPI) -> None:
    c: Any = admin.client
    await c.create(from_dict(objects.node("n1")))
    await _workload(admin, "db", "n1", 1)
    await c.create(from_dict(objects.budget("db", "default", "db", minAvailable=1)))
    stuck = objects.pod("stuck", "default", node="n1")
    stuck["metadata"]["finalizers"] = ["example.com/hold"]
    await c.create(from_dict(stuck))
    with pytest.raises(TemporaryError) as caught:
        await drain.drain(admin, "n1", within=1.0, poll=0.1)
    assert str(caught.value) == (
        "draining node n1 timed out after 1s; pods that did not leave: "
        "default/db-0 (The disruption budget db needs 1 healthy pods and has 1 currently), default/stuck (terminating)"
    )
    budget: Any = await admin.get(PodDisruptionBudget, "db", "default")
    assert budget.status.disruptionsAllowed == 0


async def test_apply_is_idempotent_and_delete_reports_what_waits(admin: ClusterAPI) -> None:
    manifests = [
        objects.replica_set("api", "tke-addons", 2),
        objects.namespace("tke-addons"),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf", "namespace": "tke-addons"},
         "data": {"mode": "bridge"}},
    ]  # fmt: skip
    first = await admin.apply(manifests)
    second = await admin.apply(manifests)
    assert [o.kind for o in first] == ["Namespace", "ReplicaSet", "ConfigMap"]
    assert [o.metadata.resourceVersion for o in second] == [o.metadata.resourceVersion for o in first]
    assert [o.metadata.uid for o in second] == [o.metadata.uid for o in first]
    assert second[1].metadata.generation == 1
    manifests[0]["spec"]["replicas"] = 3
    third = await admin.apply(manifests)
    assert third[1].metadata.generation == 2 and third[1].spec.replicas == 3
    bad = objects.replica_set("bad", "tke-addons", 1)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 7
    with pytest.raises(PermanentError, match=r"spec\.template\.spec\.containers\[0\]\.imagePullPolicy"):
        await admin.apply([bad])
    with pytest.raises(PermanentError, match=r"unknown kind example\.com/v1 Widget"):
        await admin.apply([{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}])
    # Deleting: the namespace waits for its content; deleting again is fine.
    assert await admin.delete(manifests) == []
    assert await admin.delete(manifests) == []


async def test_watch_helper_resumes_and_reports_expiry(admin: ClusterAPI) -> None:
    items, version = await admin.list_objects(Node)
    assert items == []
    await admin.client.create(from_dict(objects.node("w1")))
    seen = []
    async for event in admin.watch(Node, resource_version=version, timeout_seconds=5):
        seen.append(event)
        if event.type == "BOOKMARK":
            break
    assert [(e.type, e.object.metadata.name if e.object else None) for e in seen] == [
        ("ADDED", "w1"),
        ("BOOKMARK", None),
    ]
    assert int(seen[1].resource_version) >= int(seen[0].resource_version)


async def test_a_pod_reaches_its_cluster_with_its_rotating_service_account_token(kube: StandIn, tmp_path: Path) -> None:
    """As tke-ipamd in the cluster: the API server from the pod's environment, the service
    account's CA and token files; a token the kubelet rotated is read again when refused."""
    (tmp_path / "ca.crt").write_bytes(kube.ca_pem)
    (tmp_path / "token").write_text("expired-token\n")
    host, port = kube.url.removeprefix("https://").rsplit(":", 1)
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    access = in_cluster(env, str(tmp_path))
    assert (access.server, access.ca_pem, access.identity) == (kube.url, kube.ca_pem, "bearer token")
    assert "expired-token" not in repr(access)  # a path, never the secret
    async with ClusterAPI(access) as api:
        with pytest.raises(PermanentError, match="credential refused"):
            await api.nodes()
        (tmp_path / "token").write_text("admin-token\n")  # the kubelet rotated it
        assert await api.nodes() == []
    with pytest.raises(PermanentError, match="not in a pod"):
        in_cluster({}, str(tmp_path))
    (tmp_path / "token").unlink()
    with pytest.raises(PermanentError, match="cannot read"):
        in_cluster(env, str(tmp_path))


def test_credentials_are_not_in_reprs() -> None:
    access = ClusterAccess(
        "https://h:6443", ca_pem=b"x", client_cert_pem=b"c", client_key_pem=b"SECRETKEY", token="SECRET"
    )
    assert "SECRET" not in repr(access)
    assert base64.b64encode(b"SECRETKEY").decode() not in repr(access)
