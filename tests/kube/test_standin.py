"""The Kubernetes API stand-in behaves as kube-apiserver does where the platform and its tests
lean on it, seen through lightkube and plain HTTP: authentication and RBAC with Status
answers, schema validation with 422 naming the field, resource versions and conflicts,
generation, watches (resume, 410, bookmarks, selector transitions), lists in pages, the PATCH
types, finalizers, namespace deletion, garbage collection and evictions under budgets."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import ApiError
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import ReplicaSet
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from tests.support.kube import objects, registry
from tests.support.kube.running import StandIn, running
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI, WatchEvent, WatchExpired
from tke.internal.provider.kube.config import BOOTSTRAP_GROUP, bootstrap_token_secret

pytestmark = pytest.mark.timeout(60)


def http(kube: StandIn, *, token: str = "", cert: tuple[str, str] | None = None) -> httpx.Client:
    """A plain HTTP client of the stand-in, to see its answers on the wire."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    context = ssl.create_default_context(cafile=kube.ca.ca_file)
    if cert:
        context.load_cert_chain(*cert)
    return httpx.Client(base_url=kube.url, verify=context, headers=headers, timeout=10)


def cert_files(kube: StandIn, user: str, groups: tuple[str, ...] = ()) -> tuple[str, str]:
    files = kube.ca.issue(f"c-{user}", common_name=user, organizations=groups, client=True)
    return files.cert_file, files.key_file


def configmap(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": data}


async def events(stream: AsyncIterator[WatchEvent], until: Any) -> list[WatchEvent]:
    """Events of a watch up to the first for which `until` is true."""
    out = []
    async for event in stream:
        out.append(event)
        if until(event):
            return out
    raise AssertionError(f"the watch ended before the awaited event: {out}")


def test_authentication_and_rbac_answer_with_status_objects(kube: StandIn) -> None:
    with http(kube, token="no-such-token") as c:
        r = c.get("/api/v1/namespaces")
    assert r.status_code == 401 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized",
        "reason": "Unauthorized", "code": 401,
    }  # fmt: skip
    with http(kube) as anonymous:
        assert anonymous.get("/readyz").text == "ok"  # public, as system:public-info-viewer makes it
        r = anonymous.get("/api/v1/namespaces/default/pods")
    assert r.status_code == 403
    assert r.json()["message"] == (
        'pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" '
        'in the namespace "default"'
    )
    with http(kube, cert=cert_files(kube, "alice", ("devs",))) as alice:
        review = alice.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review.status_code == 201
        assert review.json()["status"]["userInfo"] == {"username": "alice", "groups": ["devs", "system:authenticated"]}
        r = alice.get("/api/v1/nodes/n1")
        assert r.status_code == 403
        assert r.json()["message"] == (
            'nodes "n1" is forbidden: User "alice" cannot get resource "nodes" in API group "" at the cluster scope'
        )
        assert r.json()["details"] == {"name": "n1", "kind": "nodes"}
        with http(kube, token="admin-token") as admin:
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "devs-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"}],
            }
            assert admin.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding).status_code == 201
        r = alice.get("/api/v1/nodes/n1")
        assert (r.status_code, r.json()["reason"], r.json()["message"]) == (404, "NotFound", 'nodes "n1" not found')


def test_discovery_and_version(kube: StandIn) -> None:
    with http(kube, token="viewer-token") as c:
        assert c.get("/version").json()["gitVersion"] == "v1.30.2"
        groups = {g["name"] for g in c.get("/apis").json()["groups"]}
        assert {"apps", "policy", "rbac.authorization.k8s.io", "batch", "coordination.k8s.io"} <= groups
        core = {r["name"]: r for r in c.get("/api/v1").json()["resources"]}
        assert core["pods/eviction"]["kind"] == "Eviction" and core["pods/eviction"]["group"] == "policy"
        assert core["nodes"]["namespaced"] is False and core["pods"]["shortNames"] == ["po"]
        assert c.get("/apis/apps/v1").json()["groupVersion"] == "apps/v1"
        assert c.get("/apis/nosuch/v1").status_code == 404


async def test_invalid_objects_are_422_naming_each_field(admin: ClusterAPI) -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "Web_1", "namespace": "default"},
        "spec": {
            "replicas": "three",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "imag": "x"}]}},
        },
    }
    with pytest.raises(ApiError) as caught:
        await admin.client.create(from_dict(bad))
    status: Any = caught.value.status
    assert status.code == 422 and status.reason == "Invalid"
    fields = {c.field: c.message for c in status.details.causes}
    assert set(fields) == {"metadata.name", "spec.replicas", "spec.template.spec.containers[0].imag"}
    assert "lowercase RFC 1123 subdomain" in fields["metadata.name"]
    assert fields["spec.replicas"] == 'Invalid value: "three": must be of type integer'
    assert status.message.startswith('Deployment.apps "Web_1" is invalid: [')


async def test_resource_versions_conflicts_generation_and_no_op_writes(admin: ClusterAPI) -> None:
    c: Any = admin.client
    created = await c.create(from_dict(objects.replica_set("web", "default", 2)))
    assert created.metadata.generation == 1 and int(created.metadata.resourceVersion) > 0
    assert created.metadata.uid and created.metadata.creationTimestamp
    scaled = await c.patch(
        ReplicaSet, "web", {"spec": {"replicas": 3}}, namespace="default", patch_type=PatchType.MERGE
    )
    assert scaled.metadata.generation == 2
    assert int(scaled.metadata.resourceVersion) > int(created.metadata.resourceVersion)
    stale: Any = from_dict(objects.replica_set("web", "default", 5))
    stale.metadata.resourceVersion = created.metadata.resourceVersion
    with pytest.raises(ApiError) as caught:
        await c.replace(stale)
    assert caught.value.status.code == 409 and caught.value.status.reason == "Conflict"
    assert "the object has been modified" in str(caught.value.status.message)
    labelled = await c.patch(ReplicaSet, "web", {"metadata": {"labels": {"a": "b"}}}, namespace="default")
    assert labelled.metadata.generation == 2  # metadata is not spec
    status = await c.patch(
        ReplicaSet.Status, "web", {"status": {"replicas": 3}}, namespace="default", patch_type=PatchType.MERGE
    )
    assert status.metadata.generation == 2 and status.status.replicas == 3
    again = await c.patch(ReplicaSet, "web", {"spec": {"replicas": 3}}, namespace="default", patch_type=PatchType.MERGE)
    assert again.metadata.resourceVersion == status.metadata.resourceVersion  # nothing changed, nothing written
    with pytest.raises(ApiError) as caught:
        await c.create(from_dict(objects.replica_set("web", "default", 1)))
    assert (caught.value.status.code, caught.value.status.reason) == (409, "AlreadyExists")
    with pytest.raises(ApiError) as caught:
        await c.create(from_dict(configmap("x", "nowhere")))
    assert caught.value.status.message == 'namespaces "nowhere" not found'


async def test_watch_resumes_from_a_version_and_sends_bookmarks(admin: ClusterAPI) -> None:
    c: Any = admin.client
    first = await c.create(from_dict(configmap("one", a="1")))
    await c.create(from_dict(configmap("two", a="2")))
    await c.patch(ConfigMap, "one", {"data": {"a": "changed"}}, namespace="default")
    await c.delete(ConfigMap, "two", namespace="default")
    seen = await events(
        admin.watch(ConfigMap, namespace="default", resource_version=first.metadata.resourceVersion),
        until=lambda e: e.type == "BOOKMARK",
    )
    changes = [(e.type, e.object.metadata.name) for e in seen if e.type != "BOOKMARK"]
    assert changes == [("ADDED", "two"), ("MODIFIED", "one"), ("DELETED", "two")]
    assert seen[1].object.data == {"a": "changed"}
    versions = [int(e.resource_version) for e in seen]
    assert versions == sorted(versions) and versions[0] > int(first.metadata.resourceVersion)
    # Resuming from the bookmark sees only what came after it.
    await c.create(from_dict(configmap("three")))
    later = await events(
        admin.watch(ConfigMap, namespace="default", resource_version=seen[-1].resource_version),
        until=lambda e: e.type == "ADDED",
    )
    assert [(e.type, e.object.metadata.name) for e in later if e.type != "BOOKMARK"] == [("ADDED", "three")]
    # Without a version: the current objects first.
    current = await events(admin.watch(ConfigMap, namespace="default"), until=lambda e: e.type == "BOOKMARK")
    assert sorted(e.object.metadata.name for e in current if e.type == "ADDED") == ["one", "three"]


async def test_a_version_older_than_the_history_is_410_expired(tmp_path: Path) -> None:
    with running(tmp_path, history=3) as kube:
        async with ClusterAPI(from_kubeconfig(kube.kubeconfig(user="a", groups=("system:masters",)))) as api:
            first: Any = await api.client.create(from_dict(configmap("c0")))
            for i in range(1, 6):
                await api.client.create(from_dict(configmap(f"c{i}")))
            with pytest.raises(WatchExpired, match="too old resource version"):
                async for _ in api.watch(ConfigMap, resource_version=first.metadata.resourceVersion):
                    pass
        # What a real server sends: HTTP 200, then an ERROR event with a 410 Status.
        with http(kube, cert=cert_files(kube, "a", ("system:masters",))) as c:
            params = {"watch": "1", "resourceVersion": first.metadata.resourceVersion}
            response = c.get("/api/v1/configmaps", params=params)
            event = json.loads(response.text.splitlines()[0])
            assert response.status_code == 200 and event["type"] == "ERROR"
            assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"


async def test_selectors_in_lists_and_watches(admin: ClusterAPI) -> None:
    c: Any = admin.client
    for name, labels in (("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db", "env": "prod"}), ("c", {})):
        manifest = configmap(name)
        manifest["metadata"]["labels"] = labels
        await c.create(from_dict(manifest))

    async def names(labels: str = "", fields: str = "") -> list[str]:
        items: list[Any] = (await admin.list_objects(ConfigMap, namespace="default", labels=labels, fields=fields))[0]
        return [i.metadata.name for i in items]

    assert await names("tier in (web,db),env=prod") == ["a", "b"]
    assert await names("tier notin (web)") == ["b", "c"]
    assert await names("!tier") == ["c"]
    assert await names("env!=prod") == ["c"]
    assert await names("tier", "metadata.name!=a") == ["b"]
    with pytest.raises(Exception, match=r"field label not supported: data\.x"):
        await names(fields="data.x=1")
    # A watch with a selector sees an object that starts or stops matching as ADDED/DELETED.
    start = (await admin.list_objects(ConfigMap, namespace="default"))[1]
    await c.patch(ConfigMap, "c", {"metadata": {"labels": {"tier": "web"}}}, namespace="default")
    await c.patch(ConfigMap, "a", {"metadata": {"labels": {"tier": "cache"}}}, namespace="default")
    seen = await events(
        admin.watch(ConfigMap, namespace="default", resource_version=start, labels="tier=web"),
        until=lambda e: e.type == "BOOKMARK",
    )
    assert [(e.type, e.object.metadata.name) for e in seen[:-1]] == [("ADDED", "c"), ("DELETED", "a")]


def test_lists_come_in_pages(kube: StandIn) -> None:
    with http(kube, token="admin-token") as c:
        for i in range(5):
            assert c.post("/api/v1/namespaces/default/configmaps", json=configmap(f"p{i}")).status_code == 201
        page = c.get("/api/v1/namespaces/default/configmaps", params={"limit": 2}).json()
        names = [i["metadata"]["name"] for i in page["items"]]
        assert page["metadata"]["remainingItemCount"] == 3 and "apiVersion" not in page["items"][0]
        while page["metadata"].get("continue"):
            params = {"limit": 2, "continue": page["metadata"]["continue"]}
            page = c.get("/api/v1/namespaces/default/configmaps", params=params).json()
            names += [i["metadata"]["name"] for i in page["items"]]
        assert names == [f"p{i}" for i in range(5)]
        assert c.get("/api/v1/configmaps", params={"continue": "garbage"}).json()["reason"] == "BadRequest"


async def test_patch_types_and_server_side_apply(kube: StandIn, admin: ClusterAPI) -> None:
    c: Any = admin.client
    pod = objects.pod("p", "default")
    pod["spec"]["containers"].append({"name": "side", "image": "registry.test/side:1"})
    await c.create(from_dict(pod))
    merged = await c.patch(
        Pod, "p", {"spec": {"containers": [{"name": "side", "image": "registry.test/side:2"}]}},
        namespace="default", patch_type=PatchType.STRATEGIC,
    )  # fmt: skip
    assert [(x.name, x.image) for x in merged.spec.containers] == [
        ("main", "registry.test/app:1"), ("side", "registry.test/side:2"),
    ]  # fmt: skip
    ops = [
        {"op": "test", "path": "/metadata/labels/app", "value": "p"},
        {"op": "add", "path": "/metadata/labels/x", "value": "1"},
    ]
    patched = await c.patch(Pod, "p", ops, namespace="default", patch_type=PatchType.JSON)
    assert patched.metadata.labels == {"app": "p", "x": "1"}
    with pytest.raises(ApiError) as caught:
        await c.patch(Pod, "p", [{"op": "test", "path": "/metadata/labels/x", "value": "2"}], namespace="default",
                      patch_type=PatchType.JSON)  # fmt: skip
    assert caught.value.status.code == 422
    # Apply: a second manager's different value conflicts unless forced.
    cm = configmap("applied", a="1", b="2")
    first = await c.patch(
        ConfigMap, "applied", cm, namespace="default", patch_type=PatchType.APPLY, field_manager="one"
    )
    assert first.data == {"a": "1", "b": "2"}
    assert [m.manager for m in first.metadata.managedFields] == ["one"]
    with pytest.raises(ApiError) as caught:
        await c.patch(ConfigMap, "applied", configmap("applied", a="other"), namespace="default",
                      patch_type=PatchType.APPLY, field_manager="two")  # fmt: skip
    assert caught.value.status.code == 409
    assert caught.value.status.message == 'Apply failed with 1 conflict: conflict with "one" using v1: .data.a'
    forced = await c.patch(ConfigMap, "applied", configmap("applied", a="other"), namespace="default",
                           patch_type=PatchType.APPLY, field_manager="two", force=True)  # fmt: skip
    assert forced.data == {"a": "other", "b": "2"}
    # A field the manager stops applying goes (b), one another manager owns stays (a).
    dropped = await c.patch(ConfigMap, "applied", configmap("applied"), namespace="default",
                            patch_type=PatchType.APPLY, field_manager="one")  # fmt: skip
    assert dropped.data == {"a": "other"}
    with http(kube, token="admin-token") as h:
        headers = {"Content-Type": "application/apply-patch+yaml"}
        r = h.patch("/api/v1/namespaces/default/configmaps/applied", content=b"{}", headers=headers)
    assert (r.status_code, r.json()["message"]) == (
        400, "fieldManager is required for apply requests (PATCH with application/apply-patch+yaml)",
    )  # fmt: skip


async def test_finalizers_namespaces_and_garbage_collection(admin: ClusterAPI) -> None:
    c: Any = admin.client
    await c.create(from_dict(objects.namespace("team")))
    rs = await c.create(from_dict(objects.replica_set("web", "team", 2)))
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "uid": rs.metadata.uid}}
    await c.create(from_dict(objects.pod("web-1", "team", owner=owner)))
    kept = objects.pod("kept", "team")
    kept["metadata"]["finalizers"] = ["example.com/keep"]
    await c.create(from_dict(kept))
    await c.delete(ReplicaSet, "web", namespace="team")
    assert await admin.get(Pod, "web-1", "team") is None  # the garbage collector's work
    await c.delete(Namespace, "team")
    ns: Any = await admin.get(Namespace, "team")
    assert ns is not None and ns.status.phase == "Terminating"
    terminating: Any = await admin.get(Pod, "kept", "team")
    assert terminating is not None and terminating.metadata.deletionTimestamp is not None
    with pytest.raises(ApiError) as caught:
        await c.create(from_dict(configmap("late", "team")))
    assert caught.value.status.code == 403 and "being terminated" in str(caught.value.status.message)
    await c.patch(Pod, "kept", {"metadata": {"finalizers": None}}, namespace="team", patch_type=PatchType.MERGE)
    assert await admin.get(Pod, "kept", "team") is None
    assert await admin.get(Namespace, "team") is None


async def test_evictions_honour_disruption_budgets(kube: StandIn, admin: ClusterAPI) -> None:
    c: Any = admin.client
    rs = await c.create(from_dict(objects.replica_set("web", "default", 2)))
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "uid": rs.metadata.uid}}
    for name in ("web-1", "web-2"):
        await c.create(from_dict(objects.pod(name, "default", app="web", owner=owner)))
        await c.patch(Pod.Status, name, objects.RUNNING_READY, namespace="default", patch_type=PatchType.MERGE)
    await c.create(from_dict(objects.budget("web", "default", "web", minAvailable=2)))
    pdb: Any = await admin.get(PodDisruptionBudget, "web", "default")
    assert pdb is not None
    assert (pdb.status.currentHealthy, pdb.status.desiredHealthy, pdb.status.disruptionsAllowed) == (2, 2, 0)
    with http(kube, token="admin-token") as h:
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web-1", "namespace": "default"}}
        r = h.post("/api/v1/namespaces/default/pods/web-1/eviction", json=body)
    assert r.status_code == 429
    assert r.json()["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert r.json()["details"]["causes"] == [
        {"reason": "DisruptionBudget", "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}
    ]
    await c.patch(PodDisruptionBudget, "web", {"spec": {"minAvailable": 1}}, namespace="default")
    assert await admin.evict(await c.get(Pod, "web-1", namespace="default")) is None
    assert await admin.get(Pod, "web-1", "default") is None
    refused = await admin.evict(await c.get(Pod, "web-2", namespace="default"))
    assert refused == "The disruption budget web needs 1 healthy pods and has 1 currently"


async def test_bootstrap_tokens_authenticate_only_when_enabled_and_while_valid(tmp_path: Path) -> None:
    def who(kube: StandIn, token: str) -> tuple[int, Any]:
        with http(kube, token=token) as client:
            answer = client.post(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
            return answer.status_code, answer.json()

    for enabled in (True, False):
        with running(tmp_path / f"kube-{enabled}", bootstrap_token_auth=enabled) as kube:
            async with ClusterAPI(from_kubeconfig(kube.kubeconfig(user="admin", groups=("system:masters",)))) as api:
                await api.apply([bootstrap_token_secret("abcdef.0123456789abcdef", 600, "join")])
                await api.apply([bootstrap_token_secret("expire.0123456789abcdef", -60, "old")])
            code, review = who(kube, "abcdef.0123456789abcdef")
            if not enabled:
                assert code == 401
                continue
            assert code == 201
            user = review["status"]["userInfo"]
            assert user["username"] == "system:bootstrap:abcdef"
            assert {"system:bootstrappers", BOOTSTRAP_GROUP, "system:authenticated"} <= set(user["groups"])
            assert who(kube, "abcdef.0123456789abcdeX")[0] == 401  # the wrong secret
            assert who(kube, "expire.0123456789abcdef")[0] == 401  # expired
            assert who(kube, "nosuch.0123456789abcdef")[0] == 401


async def test_applying_the_same_object_later_changes_nothing(
    admin: ClusterAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server defaults a Service's ports (protocol, node port): applying the same manifest
    again later is still no write (kube-apiserver ignores managedFields' timestamps then)."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "lb", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "x"}, "ports": [{"port": 443, "targetPort": "https"}]},
    }
    (first,) = await admin.apply([service])
    monkeypatch.setattr(registry, "now", lambda: "2030-01-01T00:00:00Z")  # a later apply
    (again,) = await admin.apply([service])
    assert again.metadata.resourceVersion == first.metadata.resourceVersion
