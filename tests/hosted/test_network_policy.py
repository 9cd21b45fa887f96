"""The NetworkPolicies of every control plane's namespace (plugins/hosted/network_policy.py):
what they select and open, checked against the pods and ports the renderer creates; what they
allow between two tenants' control planes, the meta cluster's DNS and services and the outside,
evaluated with tests/support/netpol.py (the rules of the Kubernetes reference, both ways a
network plugin may treat an ipBlock that contains pod IPs); their options; and their life in
the meta cluster (the Kubernetes API stand-in, which validates them against Kubernetes' own
schemas): applied, applied again without change, patched when the options change, deleted by
the off switch, gone with the namespace."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from lightkube.resources.core_v1 import Namespace
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.types import PatchType

from tests.hosted.test_meta_cluster import cluster as meta_test_cluster
from tests.hosted.test_meta_cluster import context, world
from tests.hosted.test_render import META_VERSIONS, cluster, plan, rendered
from tests.support import netpol
from tests.support.hosted import META_NETWORKS
from tests.support.installed import masters
from tests.support.ports import free_port
from tests.support.provider_steps import run_steps
from tke.internal.plugin import loader
from tke.internal.provider.endpoint import Endpoint
from tke.internal.provider.kube import pki
from tke.plugins.cluster_providers.hosted import HostedClusterProvider
from tke.plugins.hosted import naming, network_policy
from tke.plugins.hosted.plan import Plan

pytestmark = pytest.mark.timeout(180)

NETWORKS: dict[str, Any] = {
    "meta_pod_cidrs": ["10.244.0.0/16", "fd00:10:244::/56"],
    "meta_service_cidrs": ["10.96.0.0/12", "fd00:10:96::/112"],
    "denied_egress_cidrs": ["169.254.169.254/32", "192.168.10.0/24"],
}
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
ENDPOINT = Endpoint("203.0.113.10", 6443)
WORKER = netpol.Address("198.51.100.7")  # a tenant's worker node, outside the meta cluster
KUBELET_PORT = 10250


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Component -> the pod template of its Deployment or StatefulSet, as rendered."""
    return {o["metadata"]["name"]: o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")}


def declared_ports(template: dict[str, Any]) -> set[int]:
    return {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}


def ingress_ports(policy: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}


def tenant_plan(name: str, tenant: str, **options: Any) -> Plan:
    return plan(cluster(name, tenant), ENDPOINT, **{**NETWORKS, **options})


class Addresses:
    """Pod IPs from the meta cluster's pod network, one after the other."""

    def __init__(self) -> None:
        self._hosts: Iterator[ipaddress.IPv4Address] = ipaddress.IPv4Network("10.244.0.0/16").hosts()

    def __next__(self) -> str:
        return str(next(self._hosts))


def pods_of(p: Plan, objects: list[dict[str, Any]], ips: Addresses) -> dict[str, netpol.Pod]:
    """One pod of each rendered workload, as its controller would make it from the template."""
    out = {}
    for component, template in workloads(objects).items():
        ports = tuple(
            (port["name"], port["containerPort"], port.get("protocol", "TCP"))
            for c in template["spec"]["containers"]
            for port in c.get("ports", [])
        )
        out[component] = netpol.Pod(p.namespace, f"{component}-0", next(ips), template["metadata"]["labels"], ports)
    return out


def test_the_policies_select_exactly_the_rendered_pods_and_open_only_their_declared_ports() -> None:
    p = tenant_plan("prod", "team-a", metrics_namespace_labels=MONITORING)
    objects = rendered(p, pki.ClusterCAs.generate())
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    assert sorted(policies) == sorted(network_policy.NAMES)
    templates = workloads(objects)
    assert sorted(templates) == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    for component, template in templates.items():
        labels = template["metadata"]["labels"]
        selecting = sorted(n for n, pol in policies.items() if netpol.selects(pol["spec"]["podSelector"], labels))
        # Each pod: the namespace's isolation, and its own component's policy, no other's.
        assert selecting == sorted([network_policy.ISOLATION, component]), component
        # Every port a component's policy opens is one its container declares, and every port
        # it declares is reachable by someone (etcd's three, the API server's, the metrics ports).
        assert ingress_ports(policies[component]) == declared_ports(template), component
    # The apiserver's port is the one it listens on: the endpoint's (a NodePort's number too).
    node_port = plan(cluster(), Endpoint("api.example.com", 31443), **NETWORKS)
    [apiserver_policy] = [o for o in network_policy.policies(node_port) if o["metadata"]["name"] == naming.APISERVER]
    assert ingress_ports(apiserver_policy) == declared_ports(workloads(rendered(node_port, pki.ClusterCAs.generate()))[
        naming.APISERVER]) == {31443}  # fmt: skip
    # Without a monitoring namespace, the controller-manager's and scheduler's ports are closed.
    plain = {o["metadata"]["name"]: o for o in network_policy.policies(tenant_plan("prod", "team-a"))}
    assert ingress_ports(plain[naming.CONTROLLER_MANAGER]) == ingress_ports(plain[naming.SCHEDULER]) == set()


@pytest.mark.parametrize("version", META_VERSIONS)
def test_egress_leaves_out_the_meta_clusters_networks_in_each_family(version: str) -> None:
    p = tenant_plan("prod", "team-a")
    isolation = network_policy.isolation(p)
    kubernetes_validate.validate(isolation, version, strict=True)
    assert isolation["spec"]["podSelector"] == {}  # every pod of the namespace, rendered or not
    assert isolation["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in isolation["spec"]  # nothing in but what the components' policies allow
    blocks = [peer["ipBlock"] for rule in isolation["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert blocks == [
        {
            "cidr": "0.0.0.0/0",
            "except": ["10.244.0.0/16", "10.96.0.0/12", "169.254.169.254/32", "192.168.10.0/24", "169.254.0.0/16"],
        },
        {"cidr": "::/0", "except": ["fd00:10:244::/56", "fd00:10:96::/112", "fe80::/10", "fd00:ec2::254/128"]},
    ]


def world_of_two_tenants(*, ipblocks_match_pods: bool, **options: Any) -> tuple[netpol.Cluster, dict[str, Any]]:
    """Tenants A and B's control planes in one meta cluster, with its DNS, a service of the meta
    cluster's own and a monitoring namespace."""
    ips = Addresses()
    plans = {"a": tenant_plan("prod", "team-a", **options), "b": tenant_plan("prod", "team-b", **options)}
    namespaces: dict[str, dict[str, str]] = {"kube-system": {}, "monitoring": {}, "default": {}}
    pods: dict[str, Any] = {}
    policies = []
    for tenant, p in plans.items():
        objects = rendered(p, pki.ClusterCAs.generate())
        namespaces[p.namespace] = next(o for o in objects if o["kind"] == "Namespace")["metadata"]["labels"]
        pods[tenant] = pods_of(p, objects, ips)
        policies += [o for o in objects if o["kind"] == "NetworkPolicy"]
    pods["dns"] = netpol.Pod("kube-system", "coredns-0", next(ips), {"k8s-app": "kube-dns"}, (("dns", 53, "UDP"),))
    pods["meta-service"] = netpol.Pod("default", "billing-0", next(ips), {"app": "billing"})
    pods["prometheus"] = netpol.Pod("monitoring", "prometheus-0", next(ips), {"app": "prometheus"})
    every = [*pods["a"].values(), *pods["b"].values(), pods["dns"], pods["meta-service"], pods["prometheus"]]
    return netpol.Cluster(namespaces, every, policies, ipblocks_match_pods=ipblocks_match_pods), pods


@pytest.mark.parametrize("ipblocks_match_pods", [True, False], ids=["ipblock-matches-pod-ips", "pods-only-by-selector"])
def test_no_tenant_reaches_another_tenants_etcd_and_each_control_plane_keeps_what_it_needs(
    ipblocks_match_pods: bool,
) -> None:
    meta, pods = world_of_two_tenants(ipblocks_match_pods=ipblocks_match_pods)
    a, b = pods["a"], pods["b"]
    etcd_ports = sorted(declared_ports({"spec": {"containers": [{"ports": [{"containerPort": port} for _, port, _ in
                                                                           a["etcd"].ports]}]}}))  # fmt: skip
    assert etcd_ports == [2379, 2380, 2381]
    # Tenant B's pods (its API server dials what the tenant writes) never reach A's etcd, on any
    # of its ports, nor A's other components; nor do A's reach B's.
    for attacker, victim in ((b, a), (a, b)):
        for source in attacker.values():
            for port in etcd_ports:
                assert not meta.allowed(source, victim["etcd"], port), (source.name, port)
            for component in (naming.CONTROLLER_MANAGER, naming.SCHEDULER):
                target = victim[component]
                assert not meta.allowed(source, target, target.ports[0][1])
    # Nor the meta cluster's own services, nor a monitoring namespace's pods, nor addresses of its
    # service network (a ClusterIP that is not translated to a pod before the policy applies).
    for target, port in ((pods["meta-service"], 8080), (pods["prometheus"], 9090)):
        assert not meta.allowed(a["kube-apiserver"], target, port)
    assert not meta.allowed(a["kube-apiserver"], netpol.Address("10.96.0.10"), 443)
    assert not meta.allowed(a["kube-apiserver"], netpol.Address("169.254.169.254"), 80)
    assert not meta.allowed(a["kube-apiserver"], netpol.Address("10.244.7.7"), 2381)  # a pod IP, as an address

    # What a control plane needs: its API server reaches its etcd; etcd members reach each other;
    # the controller-manager and scheduler reach the API server; every component resolves names;
    # the API server reaches the tenant's nodes (kubelet: logs, exec) and the outside world.
    assert meta.allowed(a["kube-apiserver"], a["etcd"], 2379)
    assert meta.allowed(a["etcd"], a["etcd"], 2380)
    for component in (naming.CONTROLLER_MANAGER, naming.SCHEDULER):
        assert meta.allowed(a[component], a["kube-apiserver"], ENDPOINT.port)
    for pod in a.values():
        assert meta.allowed(pod, pods["dns"], 53, "UDP") and meta.allowed(pod, pods["dns"], 53, "TCP")
    assert not meta.allowed(a["kube-apiserver"], pods["dns"], 8080)
    assert meta.allowed(a["kube-apiserver"], WORKER, KUBELET_PORT)
    assert meta.allowed(a["kube-apiserver"], netpol.Address("2001:db8::1"), 443)
    # Nodes and users reach the API server through the endpoint, from any address (its ingress
    # is as public as the endpoint); nothing else of the namespace. Another tenant's pods do not
    # get there: their own egress stops at the meta cluster's pod network.
    assert meta.allowed(WORKER, a["kube-apiserver"], ENDPOINT.port)
    assert not meta.allowed(b["kube-apiserver"], a["kube-apiserver"], ENDPOINT.port)
    assert not meta.allowed(WORKER, a["kube-apiserver"], 2379)
    assert not meta.allowed(WORKER, a["etcd"], 2379)
    # Only the namespace's API servers reach etcd's client port, only its members the peer port.
    assert not meta.allowed(a["kube-controller-manager"], a["etcd"], 2379)
    assert not meta.allowed(a["kube-apiserver"], a["etcd"], 2380)
    assert meta.allowed(a["kube-scheduler"], a["etcd"], 2381)  # metrics: the namespace's own pods
    # No monitoring namespace configured: none scrapes.
    assert not meta.allowed(pods["prometheus"], a["etcd"], 2381)


@pytest.mark.parametrize("ipblocks_match_pods", [True, False], ids=["ipblock-matches-pod-ips", "pods-only-by-selector"])
def test_link_local_addresses_and_the_metadata_service_are_denied_by_default(ipblocks_match_pods: bool) -> None:
    """A tenant makes its API server dial what it chooses (webhooks, aggregated APIs): with no
    option denying it, 169.254.169.254 (a cloud's instance metadata service, the meta nodes'
    credentials) was reachable. Now link-local is denied whatever the options say."""
    plain: dict[str, Any] = {"meta_pod_cidrs": ["10.244.0.0/16", "fd00:10:244::/56"],
                             "meta_service_cidrs": ["10.96.0.0/12"], "denied_egress_cidrs": []}  # fmt: skip
    meta, pods = world_of_two_tenants(ipblocks_match_pods=ipblocks_match_pods, **plain)
    a = pods["a"]
    for component in a.values():
        for address, port in (("169.254.169.254", 80), ("169.254.20.10", 53), ("fe80::1", 443),
                              ("fd00:ec2::254", 80)):  # fmt: skip
            assert not meta.allowed(component, netpol.Address(address), port), (component.name, address)
        # Still: the outside (its workers' kubelets, webhooks), and its own namespace.
        assert meta.allowed(component, WORKER, KUBELET_PORT)
        assert meta.allowed(component, netpol.Address("2001:db8::1"), 443)
        assert meta.allowed(component, a["etcd"], 2381)
    assert meta.allowed(a["kube-apiserver"], a["etcd"], 2379)

    # An operator gives back one address (a NodeLocal DNSCache): that one, not the metadata service.
    meta, pods = world_of_two_tenants(ipblocks_match_pods=ipblocks_match_pods, **plain,
                                      allowed_link_local_cidrs=["169.254.20.10/32"])  # fmt: skip
    apiserver = pods["a"]["kube-apiserver"]
    assert meta.allowed(apiserver, netpol.Address("169.254.20.10"), 53, "UDP")
    assert not meta.allowed(apiserver, netpol.Address("169.254.169.254"), 80)
    # All of it given back, but the metadata service denied by denied_egress_cidrs: still denied.
    metadata_denied = {**plain, "denied_egress_cidrs": ["169.254.169.254/32"]}
    meta, pods = world_of_two_tenants(ipblocks_match_pods=ipblocks_match_pods, **metadata_denied,
                                      allowed_link_local_cidrs=["169.254.0.0/16"])  # fmt: skip
    apiserver = pods["a"]["kube-apiserver"]
    assert meta.allowed(apiserver, netpol.Address("169.254.20.10"), 53, "UDP")
    assert not meta.allowed(apiserver, netpol.Address("169.254.169.254"), 80)
    for version in META_VERSIONS:
        given_back = tenant_plan("prod", "team-a", **metadata_denied, allowed_link_local_cidrs=["169.254.0.0/16"])
        kubernetes_validate.validate(network_policy.isolation(given_back), version, strict=True)


def test_a_monitoring_namespace_scrapes_metrics_and_nothing_else() -> None:
    meta, pods = world_of_two_tenants(ipblocks_match_pods=True, metrics_namespace_labels=MONITORING)
    a, prometheus = pods["a"], pods["prometheus"]
    assert meta.allowed(prometheus, a["etcd"], 2381)
    assert meta.allowed(prometheus, a["kube-controller-manager"], 10257)
    assert meta.allowed(prometheus, a["kube-scheduler"], 10259)
    assert not meta.allowed(prometheus, a["etcd"], 2379)
    assert not meta.allowed(pods["meta-service"], a["etcd"], 2381)
    # Another tenant is no monitoring namespace.
    assert not meta.allowed(pods["b"]["kube-apiserver"], a["etcd"], 2381)


def test_the_evaluator_follows_the_references_rules() -> None:
    """The rules tests/support/netpol.py implements, on the reference's own kinds of examples."""
    web = netpol.Pod("shop", "web", "10.0.0.1", {"app": "web"}, (("http", 80, "TCP"),))
    db = netpol.Pod("shop", "db", "10.0.0.2", {"app": "db"})
    other = netpol.Pod("lab", "x", "10.0.1.1", {"app": "web"})
    deny: dict[str, Any] = {"podSelector": {}, "policyTypes": ["Ingress"]}
    allow_web = {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {
        "matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}]}  # fmt: skip

    def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": "shop"}, "spec": spec}  # fmt: skip

    open_cluster = netpol.Cluster({"shop": {}, "lab": {}}, [web, db, other], [], ipblocks_match_pods=True)
    assert open_cluster.allowed(other, db, 1)  # no policy: not isolated
    c = netpol.Cluster({"shop": {}, "lab": {}}, [web, db, other], [policy("d", deny), policy("w", allow_web)],
                       ipblocks_match_pods=True)  # fmt: skip
    assert c.allowed(web, db, 5432)  # policies add up
    assert not c.allowed(web, db, 5433)
    assert not c.allowed(other, db, 5432)  # a podSelector alone: the policy's namespace only
    assert c.allowed(db, web, 80) is False  # isolated for ingress by the default deny
    assert c.allowed(web, netpol.Address("192.0.2.1"), 443)  # not isolated for egress
    both = {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "lab"}}, "podSelector": {"matchLabels": {"app": "db"}}}]}]}  # fmt: skip
    c = netpol.Cluster({"shop": {}, "lab": {}}, [web, db, other], [policy("b", both)], ipblocks_match_pods=True)
    assert not c.allowed(other, web, 80)  # namespace AND pod selector, in one peer
    egress = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {
        "cidr": "10.0.0.0/8", "except": ["10.0.1.0/24"]}}], "ports": [{"port": "http"}]}]}  # fmt: skip
    for match in (True, False):
        c = netpol.Cluster({"shop": {}, "lab": {}}, [web, db, other], [policy("e", egress)], ipblocks_match_pods=match)
        assert c.allowed(db, web, 80) is match  # named port of the destination; ipBlock on a pod IP
        assert not c.allowed(db, web, 81)
        assert not c.allowed(db, netpol.Address("10.0.1.5"), 80)  # except


def test_the_off_switch_renders_no_policy() -> None:
    p = plan(cluster(), ENDPOINT, network_policy=False)
    assert network_policy.policies(p) == []
    assert not [o for o in rendered(p, pki.ClusterCAs.generate()) if o["kind"] == "NetworkPolicy"]
    assert [r["metadata"]["name"] for r in network_policy.stale(p)] == list(network_policy.NAMES)
    # A configured meta cluster needs no networks then.
    HostedClusterProvider(kubeconfig_file="meta.yaml", network_policy=False)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"kubeconfig_file": "meta.yaml"}, "meta_pod_cidrs and meta_service_cidrs must name the meta cluster's"),
        ({"kubeconfig_file": "meta.yaml", "meta_pod_cidrs": ["10.244.0.0/16"]}, "meta_service_cidrs must name"),
        ({"meta_pod_cidrs": "10.244.0.0/16"}, "options.meta_pod_cidrs: expected a list"),
        ({"meta_pod_cidrs": ["10.244.0.1/16"]}, "'10.244.0.1/16' is not a network address as Kubernetes writes it"),
        ({"meta_service_cidrs": ["services"]}, "meta_service_cidrs: 'services' is not a CIDR"),
        ({"meta_service_cidrs": ["10.96.0.1"]}, "meta_service_cidrs: '10.96.0.1' is not a CIDR"),
        ({"denied_egress_cidrs": ["0.0.0.0/0"]}, "denied_egress_cidrs: '0.0.0.0/0' is every address"),
        ({"denied_egress_cidrs": [7]}, "options.denied_egress_cidrs[0]: expected str, got int"),
        ({"network_policy": "false"}, "options.network_policy: expected bool, got str"),
        ({"port": "6443"}, "options.port: expected int, got str"),
        ({"extra_sans": "api.example"}, "options.extra_sans: expected a list"),
        ({"metrics_namespace_labels": ["monitoring"]}, "options.metrics_namespace_labels: expected a table"),
        ({"metrics_namespace_labels": {"tke.cloud/tenant": "x"}}, "would select the control planes' own namespaces"),
        ({"metrics_namespace_labels": {"kubernetes.io/metadata.name": "tke-a"}}, "is a name of the control planes'"),
        ({"metrics_namespace_labels": {"team": "a b"}}, "metrics_namespace_labels: 'team': "),
        ({"allowed_link_local_cidrs": ["10.0.0.0/8"]}, "allowed_link_local_cidrs: '10.0.0.0/8' is not inside"),
        ({"allowed_link_local_cidrs": ["169.254.169.254"]}, "allowed_link_local_cidrs: '169.254.169.254' is not a"),
        (
            {"allowed_link_local_cidrs": ["169.254.169.254/32"], "denied_egress_cidrs": ["169.254.0.0/16"]},
            "'169.254.169.254/32' is inside 169.254.0.0/16, which another option denies",
        ),
    ],
)
def test_network_options_that_make_no_sense_stop_the_provider_from_starting(
    options: dict[str, Any], problem: str
) -> None:
    # Types are the configuration loader's to check (options.NAME: expected ...), meanings the
    # provider's (hosted provider options: ...).
    with pytest.raises(loader.PluginError, match=_escaped(problem)):
        loader.load("tke.cluster_providers", "hosted", options)


def _escaped(text: str) -> str:
    return "".join("\\" + ch if ch in ".()[]*+?" else ch for ch in text)


async def names_and_versions(api: Any, namespace: str) -> dict[str, str]:
    items, _ = await api.list_objects(NetworkPolicy, namespace=namespace)
    return {o.metadata.name: o.metadata.resourceVersion for o in items}


async def test_the_namespace_gets_its_policies_once_patched_when_options_change_and_removed(tmp_path: Path) -> None:
    async with world(tmp_path) as (meta, kubeconfig, _):
        port = free_port()
        provider = HostedClusterProvider(kubeconfig_file=str(kubeconfig), port=port, **META_NETWORKS)
        steps = [s.name for s in provider.create_steps]
        # Before any workload: the namespace is isolated before a pod of it runs.
        assert steps.index("EnsureIsolation") < steps.index("EnsureControlPlane")
        ctx = context(meta_test_cluster())
        await run_steps(provider.create_steps, ctx, within=60)
        namespace = naming.namespace(ctx.cluster)
        async with masters(meta) as api:
            first = await names_and_versions(api, namespace)
            assert sorted(first) == sorted(network_policy.NAMES)
            for name in first:
                stored: Any = await api.get(NetworkPolicy, name, namespace)
                assert stored.metadata.labels[naming.MANAGED_BY] == naming.PLATFORM
                assert stored.metadata.labels[naming.CLUSTER_UID] == ctx.cluster.metadata.uid
            apiserver: Any = await api.get(NetworkPolicy, naming.APISERVER, namespace)
            assert [p.port for p in apiserver.spec.ingress[0].ports] == [port]

            # Again: nothing changes, nothing is added.
            await provider.ensure_network_policies(ctx)
            assert await names_and_versions(api, namespace) == first

            # Other networks: the isolation policy is patched in place, the others are untouched.
            moved = HostedClusterProvider(
                kubeconfig_file=str(kubeconfig), port=port, meta_pod_cidrs=["10.32.0.0/12"],
                meta_service_cidrs=["10.96.0.0/12"], metrics_namespace_labels=MONITORING,
            )  # fmt: skip
            await moved.ensure_network_policies(ctx)
            second = await names_and_versions(api, namespace)
            changed = sorted(n for n in first if second[n] != first[n])
            assert changed == sorted([network_policy.ISOLATION, naming.ETCD, naming.CONTROLLER_MANAGER,
                                      naming.SCHEDULER])  # fmt: skip
            isolation: Any = await api.get(NetworkPolicy, network_policy.ISOLATION, namespace)
            assert isolation.spec.egress[2].to[0].ipBlock.except_ == ["10.32.0.0/12", "10.96.0.0/12", "169.254.0.0/16"]

            # Off: the platform's policies go; an operator's own policy of one of those names stays.
            await api.client.patch(NetworkPolicy, naming.SCHEDULER, {"metadata": {"labels": {
                naming.MANAGED_BY: "operator"}}}, namespace=namespace, patch_type=PatchType.MERGE)  # fmt: skip
            off = HostedClusterProvider(kubeconfig_file=str(kubeconfig), port=port, network_policy=False)
            await off.ensure_network_policies(ctx)
            assert sorted(await names_and_versions(api, namespace)) == [naming.SCHEDULER]
            await off.ensure_network_policies(ctx)  # nothing left of the platform's: nothing to do

            # On again, then the cluster is deleted: its policies go with its namespace.
            await provider.ensure_network_policies(ctx)
            assert sorted(await names_and_versions(api, namespace)) == sorted(network_policy.NAMES)
            await run_steps(provider.delete_steps, ctx, within=60)
            assert await api.get(Namespace, namespace) is None
            assert await names_and_versions(api, namespace) == {}
