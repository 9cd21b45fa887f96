"""The stand-in's wire format, proven with the official Kubernetes Python client (generated from
Kubernetes' OpenAPI, written by nobody here): kubeconfig with a client certificate, discovery
(its dynamic client reads /api and /apis), typed get and list, create from a manifest,
server-side apply, delete, a drain as kubectl does it (cordon, then the Eviction API, with a
budget answering 429), and a watch that resumes with bookmarks. Synchronous, as that client is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.dynamic
import kubernetes.utils
import kubernetes.watch
import pytest
import yaml

from tests.support.kube import objects
from tests.support.kube.running import StandIn

pytestmark = pytest.mark.timeout(60)
# Used as its users use it, with plain dicts as bodies (its type hints ask for its models).
client: Any = kubernetes.client
config: Any = kubernetes.config
utils: Any = kubernetes.utils
watch: Any = kubernetes.watch
DynamicClient: Any = kubernetes.dynamic.DynamicClient
ApiException: Any = kubernetes.client.ApiException


@pytest.fixture
def api_client(kube: StandIn) -> Iterator[Any]:
    c = config.new_client_from_config_dict(yaml.safe_load(kube.kubeconfig(user="ops", groups=("system:masters",))))
    try:
        yield c
    finally:
        c.close()


def test_get_list_create_apply_and_delete(api_client: Any) -> None:
    core = client.CoreV1Api(api_client)
    assert {ns.metadata.name for ns in core.list_namespace().items} >= {"default", "kube-system"}
    utils.create_from_dict(api_client, objects.node("n1", ip="10.0.0.9"))
    node = core.read_node("n1")
    assert node.status.node_info.kubelet_version == "v1.30.2"
    assert node.status.addresses[0].address == "10.0.0.9"
    assert node.metadata.creation_timestamp is not None and node.metadata.uid
    dynamic = DynamicClient(api_client)
    rs = dynamic.resources.get(api_version="apps/v1", kind="ReplicaSet")
    manifest = objects.replica_set("web", "default", 2)
    first = dynamic.server_side_apply(rs, body=manifest, namespace="default", field_manager="ops-tool")
    again = dynamic.server_side_apply(rs, body=manifest, namespace="default", field_manager="ops-tool")
    assert first.metadata.resourceVersion == again.metadata.resourceVersion
    assert first.metadata.managedFields[0].manager == "ops-tool"
    apps = client.AppsV1Api(api_client)
    assert apps.read_namespaced_replica_set("web", "default").spec.replicas == 2
    assert [r.metadata.name for r in apps.list_replica_set_for_all_namespaces().items] == ["web"]
    apps.delete_namespaced_replica_set("web", "default")
    with pytest.raises(ApiException) as caught:
        apps.read_namespaced_replica_set("web", "default")
    assert caught.value.status == 404
    with pytest.raises(utils.FailToCreateError) as failed:
        utils.create_from_dict(api_client, objects.namespace("Bad_Name"))
    (error,) = failed.value.api_exceptions
    assert error.status == 422 and json.loads(error.body)["details"]["causes"][0]["field"] == "metadata.name"


def test_a_drain_as_kubectl_does_it(api_client: Any) -> None:
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    utils.create_from_dict(api_client, objects.node("n1"))
    rs = api_client.sanitize_for_serialization(
        apps.create_namespaced_replica_set("default", objects.replica_set("web", "default", 1))
    )
    core.create_namespaced_pod("default", objects.pod("web-0", "default", node="n1", app="web", owner=rs))
    core.patch_namespaced_pod_status("web-0", "default", objects.RUNNING_READY)
    client.PolicyV1Api(api_client).create_namespaced_pod_disruption_budget(
        "default", objects.budget("web", "default", "web", minAvailable=1)
    )
    core.patch_node("n1", {"spec": {"unschedulable": True}})
    assert core.read_node("n1").spec.unschedulable is True
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name="web-0", namespace="default"))
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod_eviction("web-0", "default", eviction)
    assert caught.value.status == 429
    causes = json.loads(caught.value.body)["details"]["causes"]
    assert causes[0]["message"] == "The disruption budget web needs 1 healthy pods and has 1 currently"
    client.PolicyV1Api(api_client).patch_namespaced_pod_disruption_budget(
        "web", "default", {"spec": {"minAvailable": 0}}
    )
    core.create_namespaced_pod_eviction("web-0", "default", eviction)
    assert core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items == []


def test_watch_with_bookmarks_and_resume(api_client: Any) -> None:
    core = client.CoreV1Api(api_client)
    start = core.list_namespaced_config_map("default").metadata.resource_version
    for name in ("a", "b"):
        core.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"k": name}})
    core.delete_namespaced_config_map("a", "default")
    w = watch.Watch()
    seen = []
    for event in w.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=start,
        allow_watch_bookmarks=True,
        timeout_seconds=10,
    ):
        seen.append(event)
        if event["type"] == "BOOKMARK":
            w.stop()
    changes = [(e["type"], e["object"].metadata.name) for e in seen if e["type"] != "BOOKMARK"]
    assert changes == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert w.resource_version == seen[-1]["raw_object"]["metadata"]["resourceVersion"]
    # Resume from the bookmark's version: only what happened after.
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    later = []
    for event in w.stream(
        core.list_namespaced_config_map, "default", resource_version=w.resource_version, timeout_seconds=10
    ):
        later.append((event["type"], event["object"].metadata.name))
        w.stop()
    assert later == [("ADDED", "c")]


def test_forbidden_is_an_api_exception_with_a_status(kube: StandIn) -> None:
    c = config.new_client_from_config_dict(yaml.safe_load(kube.kubeconfig(user="nobody")))
    try:
        with pytest.raises(ApiException) as caught:
            client.CoreV1Api(c).list_node()
        assert caught.value.status == 403
        assert 'User "nobody" cannot list resource "nodes"' in json.loads(caught.value.body)["message"]
    finally:
        c.close()
