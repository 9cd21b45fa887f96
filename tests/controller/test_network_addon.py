"""The network add-on as rendered per cluster (tke.internal.provider.addons.network): every
object valid for the cluster's Kubernetes version by Kubernetes' own OpenAPI schemas
(kubernetes-validate, strict) and by the API server's rules for names and labels, the CNI
configuration of each network mode readable by cni-switch and tke-ipamc themselves, tke-ipamd's
configuration loadable by tke-ipamd, and RBAC with nothing beyond what tke-ipamd reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import kubeadm_reference
from tests.support.kube.catalog import BY_KIND
from tests.support.kube.validation import Validator
from tke.internal.cni.ipamc.config import IpamcConfig
from tke.internal.cni.switch.config import SwitchConfig
from tke.internal.config.loader import load
from tke.internal.ipamd.config import IpamdConfig
from tke.internal.provider.addons import network, nodevalues
from tke.platform.v1 import cluster_pb2

MODES = {
    "unset": cluster_pb2.NETWORK_MODE_UNSPECIFIED,
    "bridge": cluster_pb2.NETWORK_MODE_BRIDGE,
    "fixed-ip": cluster_pb2.NETWORK_MODE_FIXED_IP,
    "subnet-ip": cluster_pb2.NETWORK_MODE_SUBNET_IP,
}
NODE = {nodevalues.NODE_NAME: "node-1", nodevalues.NODE_IP: "192.168.1.10", nodevalues.NODE_POD_CIDR: "10.244.1.0/24"}


def cluster(mode: int, version: str = "1.30.2") -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name, c.metadata.tenant_id = "demo", "team-a"
    c.spec.version = version
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    c.spec.network.mode = mode  # type: ignore[assignment]
    return c


def by_name(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


@pytest.mark.parametrize("version", ["1.30.2", "1.31.1"])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_object_is_valid_for_the_clusters_kubernetes(version: str, mode: str) -> None:
    objects = network.render(cluster(MODES[mode], version))
    names = Validator(version)
    schemas = ".".join(version.split(".")[:2])
    for obj in objects:
        kubernetes_validate.validate(obj, schemas, strict=True)  # raises naming the field
        kind = BY_KIND[(obj["apiVersion"], obj["kind"])]
        assert names.metadata_causes(kind, obj["metadata"]) == [], obj["metadata"]
    # A mistake would be caught: an unknown field.
    wrong = json.loads(json.dumps(objects[-1]))
    wrong["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, schemas, strict=True)


def test_the_network_mode_chooses_the_objects_and_the_default_network() -> None:
    bridge = by_name(network.render(cluster(cluster_pb2.NETWORK_MODE_UNSPECIFIED)))
    assert list(bridge) == [
        "ServiceAccount/tke-cni", "ClusterRole/tke:cni", "ClusterRoleBinding/tke:cni", "ConfigMap/tke-cni",
        "DaemonSet/tke-cni",
    ]  # fmt: skip
    fixed = by_name(network.render(cluster(cluster_pb2.NETWORK_MODE_FIXED_IP)))
    assert {"DaemonSet/tke-ipamd", "Deployment/tke-ipamd-watcher", "ConfigMap/tke-ipamd"} <= set(fixed)
    for mode, default, ipamd in (
        ("bridge", "bridge", False),
        ("fixed-ip", "fixed", True),
        ("subnet-ip", "subnet", True),
    ):
        objects = by_name(network.render(cluster(MODES[mode])))
        conflist = json.loads(objects["ConfigMap/tke-cni"]["data"][network.CONFLIST])
        switch = conflist["plugins"][0]
        assert (switch["defaultNetwork"], "ipamd" in switch) == (default, ipamd), mode
        # What cni-switch and tke-ipamc read, once the node's installer filled in its values.
        filled = nodevalues.fill(conflist, NODE)
        parsed = SwitchConfig.from_json({"name": filled["name"], "cniVersion": "1.0.0", **filled["plugins"][0]})
        for key in parsed.networks:
            net = parsed.network(key)
            for plugin in net.plugins:
                ipam = plugin.get("ipam", {})
                if ipam.get("type") == "tke-ipamc":
                    got = IpamcConfig.from_network(plugin, {})
                    assert (got.node, got.node_ip) == ("node-1", "192.168.1.10")
                elif ipam.get("type") == "host-local":
                    assert ipam["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
        assert nodevalues.used(conflist) == ({*nodevalues.PLACEHOLDERS} if ipamd else {nodevalues.NODE_POD_CIDR})


def test_tke_ipamd_gets_read_access_to_its_five_kinds_and_nothing_more() -> None:
    objects = by_name(network.render(cluster(cluster_pb2.NETWORK_MODE_FIXED_IP)))
    granted = {
        (group, res, verb)
        for rule in objects["ClusterRole/tke:ipamd"]["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }
    kinds = (("", "pods"), ("", "nodes"), ("apps", "statefulsets"), ("apps", "deployments"), ("apps", "replicasets"))
    assert granted == {(g, r, v) for g, r in kinds for v in ("get", "list", "watch")}
    assert objects["ClusterRole/tke:cni"]["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    binding = objects["ClusterRoleBinding/tke:ipamd"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tke-ipamd", "namespace": "kube-system"}]
    for name in ("DaemonSet/tke-ipamd", "Deployment/tke-ipamd-watcher"):
        assert objects[name]["spec"]["template"]["spec"]["serviceAccountName"] == "tke-ipamd"


def test_tke_ipamds_configuration_loads_and_says_what_each_workload_does(tmp_path: Path) -> None:
    options = network.NetworkAddonOptions(etcd_endpoints=("10.0.0.5:2379",), etcd_tls_secret="ipamd-etcd")
    c = cluster(cluster_pb2.NETWORK_MODE_FIXED_IP)
    c.metadata.uid = "0b7c6a2e-uid"
    objects = by_name(network.render(c, options))
    loaded = {}
    for name, text in objects["ConfigMap/tke-ipamd"]["data"].items():
        (tmp_path / name).write_text(text)
        loaded[name] = load(tmp_path / name, IpamdConfig)
    agent, watcher = loaded["ipamd.toml"], loaded["watcher.toml"]
    assert (agent.socket, agent.kubernetes.in_cluster, agent.kubernetes.watch_workloads) == (
        network.IPAMD_SOCKET,
        True,
        False,
    )
    assert agent.extender.address == "127.0.0.1:9040"
    assert (watcher.socket, watcher.kubernetes.watch_workloads, watcher.extender.address) == ("", True, "")
    # The node agent's socket serves its own node: NODE_NAME is the pod's spec.nodeName.
    assert (agent.node_name_env, watcher.node_name_env) == ("NODE_NAME", "")
    agent_env = objects["DaemonSet/tke-ipamd"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in agent_env
    for config in (agent, watcher):
        assert config.storage.options["prefix"] == "/tke/clusters/team-a/demo"  # each cluster's own
        # The name's next cluster (another uid) empties what a deleted one left there.
        assert config.storage.options["cluster_uid"] == "0b7c6a2e-uid"
        assert config.storage.options["endpoints"] == ["10.0.0.5:2379"]
        assert config.storage.options["ca_file"] == "/etc/tke-ipamd/etcd/ca.crt"
    agent_pod = objects["DaemonSet/tke-ipamd"]["spec"]["template"]["spec"]
    assert {v["name"] for v in agent_pod["volumes"]} == {"config", "etcd-tls", "run-tke"}
    assert agent_pod["containers"][0]["readinessProbe"]["httpGet"]["port"] == 9040


def test_an_operators_value_never_changes_the_configurations_structure(tmp_path: Path) -> None:
    sneaky = '/x"\n[tcp]\naddress = "0.0.0.0:1"\ninsecure = true\n#'
    objects = by_name(
        network.render(cluster(cluster_pb2.NETWORK_MODE_FIXED_IP), network.NetworkAddonOptions(etcd_prefix=sneaky))
    )
    (tmp_path / "ipamd.toml").write_text(objects["ConfigMap/tke-ipamd"]["data"]["ipamd.toml"])
    config = load(tmp_path / "ipamd.toml", IpamdConfig)
    assert config.storage.options["prefix"] == sneaky and config.tcp.address == ""


def test_images_come_from_the_platforms_options() -> None:
    default = by_name(network.render(cluster(cluster_pb2.NETWORK_MODE_FIXED_IP)))
    images = {c["image"] for o in default.values() if o["kind"] in ("DaemonSet", "Deployment")
              for c in o["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert images == {f"tke/network:{network.platform_version()}"}
    mine = network.NetworkAddonOptions(image_repository="registry.example.internal/tke/network", image_tag="v2")
    ds = by_name(network.render(cluster(cluster_pb2.NETWORK_MODE_BRIDGE), mine))["DaemonSet/tke-cni"]
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.internal/tke/network:v2"
    with pytest.raises(ValueError, match="unknown option 'image'"):
        network.options_from({"image": "x"})


@pytest.mark.parametrize("mode", list(MODES))
def test_the_control_plane_holds_the_schedulers_configuration_only_with_tke_ipamd(mode: str) -> None:
    c = cluster(MODES[mode])
    text = network.scheduler_file(c, network.NetworkAddonOptions(extender_port=9041, extender_ignorable=True))
    if not network.uses_ipamd(c):
        assert text is None
        return
    assert text is not None
    (doc,) = yaml.safe_load_all(text)
    assert kubeadm_reference.errors(doc) == []  # kube-scheduler's own configuration API
    assert doc["clientConnection"]["kubeconfig"] == network.SCHEDULER_KUBECONFIG
    assert doc["extenders"] == [
        {"urlPrefix": "http://127.0.0.1:9041", "filterVerb": "filter", "prioritizeVerb": "prioritize", "weight": 1,
         "nodeCacheCapable": False, "ignorable": True, "httpTimeout": "5s"}
    ]  # fmt: skip
