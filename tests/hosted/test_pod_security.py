"""Pod Security Admission on every control plane's namespace of the meta cluster: the namespace
enforces "restricted" (control_plane.pod_security_labels); every pod the provider renders, of any
workload kind, satisfies the restricted profile as Kubernetes defines it (tests/support/pss.py,
written from the Pod Security Standards and PSA's checks), at the pinned version and at the latest
rules; the meta cluster (the API stand-in, whose Pod Security Admission refuses a violating pod)
runs the control plane under it, refuses a privileged or hostPath pod there, and a namespace made
before the labels gets them from EnsureIsolation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from tests.hosted.test_meta_cluster import cluster as meta_test_cluster
from tests.hosted.test_meta_cluster import context, world
from tests.hosted.test_render import META_VERSIONS, cluster, plan, rendered
from tests.support import pss
from tests.support.hosted import META_NETWORKS
from tests.support.installed import masters
from tests.support.ports import free_port
from tests.support.provider_steps import run_steps
from tests.support.waiting import wait_for
from tke.internal.provider.endpoint import Endpoint
from tke.internal.provider.kube import pki
from tke.plugins.cluster_providers.hosted import HostedClusterProvider
from tke.plugins.hosted import naming

pytestmark = pytest.mark.timeout(180)

ENDPOINT = Endpoint("203.0.113.10", 6443)
PINNED = (1, 30)  # enforce-version: the oldest meta cluster the renderer is checked against
LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "v1.30",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/audit-version": "latest",
}


def rendered_pods(**options: Any) -> list[dict[str, Any]]:
    objects = rendered(plan(cluster(), ENDPOINT, **options), pki.ClusterCAs.generate())
    return [pod for o in objects if (pod := pss.pod_of(o)) is not None]


@pytest.mark.parametrize(
    "options",
    [{}, {"service_type": "NodePort", "etcd_replicas": 5, "etcd_storage_class": "fast", "apiserver_replicas": 3}],
    ids=["defaults", "nodeport-5-members"],
)
def test_every_rendered_pod_satisfies_the_restricted_profile(options: dict[str, Any]) -> None:
    pods = rendered_pods(**options)
    # Every workload the provider renders makes pods, whatever its kind: all of them are checked.
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(
        f"{n}-0" for n in (naming.ETCD, naming.APISERVER, naming.CONTROLLER_MANAGER, naming.SCHEDULER)
    )
    for pod in pods:
        for version in (PINNED, pss.LATEST):
            assert pss.violations(pod["spec"], pod["metadata"], at_version=version) == [], pod["metadata"]["name"]
        for meta_version in META_VERSIONS:
            kubernetes_validate.validate(pod, meta_version, strict=True)  # the pod the controller sends
    # etcd's data is a persistentVolumeClaim (allowed), the PKI a secret, /tmp an emptyDir.
    etcd = next(p for p in pods if p["metadata"]["name"] == "etcd-0")
    assert sorted(k for v in etcd["spec"]["volumes"] for k in v if k != "name") == [
        "emptyDir", "persistentVolumeClaim", "secret"]  # fmt: skip


def test_the_namespace_enforces_restricted_pinned_and_warns_at_latest() -> None:
    [namespace] = [
        o for o in rendered(plan(cluster(), ENDPOINT), pki.ClusterCAs.generate()) if o["kind"] == "Namespace"
    ]
    labels = namespace["metadata"]["labels"]
    assert {k: v for k, v in labels.items() if k.startswith("pod-security.kubernetes.io/")} == LABELS
    assert labels[naming.MANAGED_BY] == naming.PLATFORM  # the platform's labels stay
    assert f"v{PINNED[0]}.{PINNED[1]}" == min(f"v{v.rsplit('.', 1)[0]}" for v in META_VERSIONS)


def _hardened_pod() -> dict[str, Any]:
    return next(p for p in rendered_pods() if p["metadata"]["name"].startswith(naming.APISERVER))


def _with(pod: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `pod` with the field at "spec.a.b" (containers[0] as "c0") set."""
    out = copy.deepcopy(pod)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node["spec"]["containers"][0] if part == "c0" else node.setdefault(part, {})
    node[parts[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "reason", "level"),
    [
        ("spec.hostNetwork", True, "host namespaces", "baseline"),
        ("spec.hostPID", True, "host namespaces", "baseline"),
        ("c0.securityContext.privileged", True, "privileged", "baseline"),
        (
            "c0.securityContext.capabilities",
            {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
            "non-default capabilities",
            "baseline",
        ),
        ("spec.volumes", [{"name": "h", "hostPath": {"path": "/"}}], "hostPath volumes", "baseline"),
        ("c0.ports", [{"containerPort": 6443, "hostPort": 6443}], "hostPort", "baseline"),
        ("spec.securityContext.seccompProfile", {"type": "Unconfined"}, "seccompProfile", "baseline"),
        ("c0.securityContext.procMount", "Unmasked", "procMount", "baseline"),
        ("spec.securityContext.seLinuxOptions", {"type": "spc_t"}, "seLinuxOptions", "baseline"),
        ("spec.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "forbidden sysctls", "baseline"),
        ("spec.volumes", [{"name": "n", "nfs": {"server": "x", "path": "/"}}], "restricted volume types", "restricted"),
        ("c0.securityContext.allowPrivilegeEscalation", True, "allowPrivilegeEscalation != false", "restricted"),
        ("spec.securityContext.runAsNonRoot", False, "runAsNonRoot != true", "restricted"),
        ("spec.securityContext.runAsUser", 0, "runAsUser=0", "restricted"),
        ("c0.securityContext.capabilities", {"drop": ["NET_RAW"]}, "unrestricted capabilities", "restricted"),
        (
            "c0.securityContext.capabilities",
            {"drop": ["ALL"], "add": ["CHOWN"]},
            "unrestricted capabilities",
            "restricted",
        ),
    ],
)
def test_the_evaluator_refuses_what_the_profiles_refuse(path: str, value: Any, reason: str, level: str) -> None:
    pod = _with(_hardened_pod(), path, value)
    found = pss.violations(pod["spec"], pod["metadata"])
    assert any(v.startswith(reason) for v in found), found
    # A baseline rule is refused at baseline too; a restricted-only rule is not.
    at_baseline = pss.violations(pod["spec"], pod["metadata"], at_level="baseline")
    assert any(v.startswith(reason) for v in at_baseline) is (level == "baseline")


def test_the_evaluator_reads_pod_and_container_settings_as_psa_does() -> None:
    pod = _hardened_pod()
    assert pss.violations(pod["spec"]) == []
    # Pod-level runAsNonRoot and seccomp cover containers that set none; without them each
    # container must set its own.
    bare = _with(_with(pod, "spec.securityContext", {}), "c0.securityContext", {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}})  # fmt: skip
    reasons = {v.split(" (")[0] for v in pss.violations(bare["spec"])}
    assert reasons == {"runAsNonRoot != true", "seccompProfile"}
    own = _with(bare, "c0.securityContext", {"allowPrivilegeEscalation": False, "capabilities": {
        "drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}, "runAsNonRoot": True, "seccompProfile": {"type": "Localhost",
        "localhostProfile": "p.json"}})  # fmt: skip
    assert pss.violations(own["spec"]) == []
    # An init container is a container too.
    init = {"name": "init", "image": "busybox"}
    found = pss.violations({**pod["spec"], "initContainers": [init]})
    assert any('container "init"' in v for v in found)
    # A probe's host is refused from 1.34 only (baseline's newest check).
    probe_host = _with(pod, "c0.livenessProbe", {"httpGet": {"path": "/", "port": 1, "host": "10.0.0.1"}})
    assert pss.violations(probe_host["spec"], at_version=(1, 33)) == []
    assert pss.violations(probe_host["spec"], at_version=(1, 34))
    # Labels as PSA reads them: unset is privileged, an invalid level restricted, an invalid
    # version latest.
    assert pss.level(None) == "privileged" and pss.level("strict") == "restricted"
    assert pss.version("v1.30") == (1, 30) and pss.version("1.30") == pss.LATEST == pss.version("latest")


def _bad_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "debug", "namespace": namespace},
        "spec": {
            "hostPID": True,
            "containers": [{"name": "shell", "image": "busybox", "securityContext": {"privileged": True}}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        },
    }


def _pod(manifest: dict[str, Any]) -> Any:
    return from_dict(manifest)  # the pod carries its namespace


async def test_the_meta_cluster_runs_the_control_plane_and_refuses_a_privileged_pod_in_its_namespace(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as (meta, kubeconfig, controllers):
        provider = HostedClusterProvider(kubeconfig_file=str(kubeconfig), **META_NETWORKS, port=free_port())
        ctx = context(meta_test_cluster())
        await run_steps(provider.create_steps[:-3], ctx, within=60)  # up to WaitAPIReady
        namespace = naming.namespace(ctx.cluster)
        assert controllers.refused == {}  # every control-plane pod admitted under "restricted"
        async with masters(meta) as api:
            ns: Any = await api.get(Namespace, namespace)
            assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
            # A privileged, host-PID, hostPath pod (an operator's debug pod, a compromised
            # component with the namespace's rights) is refused there, with PSA's reasons...
            with pytest.raises(ApiError) as refused:
                await api.client.create(_pod(_bad_pod(namespace)))
            assert refused.value.status.code == 403
            message = refused.value.status.message or ""
            assert 'violates PodSecurity "restricted:v1.30"' in message
            for reason in ("host namespaces (hostPID=true)", "privileged", "hostPath volumes", "runAsNonRoot"):
                assert reason in message, message
            # ... and admitted in a namespace without the labels (the stand-in enforces only those).
            await api.client.create(from_dict({"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": "scratch"}}))  # fmt: skip
            await api.client.create(_pod(_bad_pod("scratch")), dry_run=True)

            # A workload whose pods the meta cluster refuses is never ready (its controller's
            # pods are refused): the stand-in's controllers play that too.
            bad = {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True}
            await api.client.patch(Deployment, naming.SCHEDULER, [bad], namespace=namespace,
                                   patch_type=PatchType.JSON)  # fmt: skip
            key = f"{namespace}/{naming.SCHEDULER}"
            await wait_for(lambda: key in controllers.refused, within=30, what="the scheduler's pod refused")
            assert "host namespaces (hostNetwork=true)" in controllers.refused[f"{namespace}/{naming.SCHEDULER}"]


async def test_a_namespace_made_before_the_labels_gets_them_from_ensure_isolation(tmp_path: Path) -> None:
    async with world(tmp_path) as (meta, kubeconfig, _):
        provider = HostedClusterProvider(kubeconfig_file=str(kubeconfig), **META_NETWORKS, port=free_port())
        ctx = context(meta_test_cluster())
        names = [s.name for s in provider.create_steps]
        # Before any pod of the control plane; a step name clusters made before have not run.
        assert names.index("EnsureIsolation") < names.index("EnsureControlPlane")
        await run_steps(provider.create_steps[:3], ctx, within=60)  # credential, endpoint, certificates
        namespace = naming.namespace(ctx.cluster)
        async with masters(meta) as api:
            # As an earlier platform made it: no Pod Security labels (removed under the
            # platform's own field manager, as its earlier apply left the namespace).
            unlabelled = {k: None for k in LABELS}
            await api.client.patch(Namespace, namespace, {"metadata": {"labels": unlabelled}},
                                   patch_type=PatchType.MERGE)  # fmt: skip
            before: Any = await api.get(Namespace, namespace)
            assert not [k for k in before.metadata.labels if k.startswith("pod-security")]
            isolation = [s for s in provider.create_steps if s.name == "EnsureIsolation"]
            await run_steps(isolation, ctx, within=60)  # as the controller runs a step it has not run
            after: Any = await api.get(Namespace, namespace)
            assert {k: after.metadata.labels.get(k) for k in LABELS} == LABELS
            assert after.metadata.labels[naming.CLUSTER_UID] == ctx.cluster.metadata.uid
            # Again: nothing changes.
            await run_steps(isolation, ctx, within=60)
            again: Any = await api.get(Namespace, namespace)
            assert again.metadata.resourceVersion == after.metadata.resourceVersion
