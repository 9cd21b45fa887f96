"""What the hosted provider renders for the meta cluster and for the hosted cluster's own API,
checked offline against Kubernetes' own OpenAPI schemas (kubernetes-validate, strict: unknown
fields, wrong types and missing required fields fail) for two meta cluster versions, and the
PKI it issues checked as the components would use it."""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from typing import Any

import grpc
import kubernetes_validate
import pytest
from cryptography import x509

from tests.support.apiserver import local_config, start, stop
from tests.support.rpc import bad_request_fields
from tke.internal.config.loader import ConfigError
from tke.internal.provider.endpoint import Endpoint
from tke.internal.provider.kube import pki
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2
from tke.plugins.cluster_providers.hosted import HostedClusterProvider
from tke.plugins.hosted import certificates, cluster_objects, control_plane, naming, network_policy
from tke.plugins.hosted.options import HostedOptions
from tke.plugins.hosted.plan import Plan

META_VERSIONS = ("1.30.0", "1.31.0")


def cluster(name: str = "prod", tenant: str = "team-a", version: str = "1.31.2") -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name, c.metadata.uid, c.metadata.tenant_id = name, str(uuid.uuid4()), tenant
    c.spec.type, c.spec.version = "hosted", version
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    c.spec.extra_args["kube-apiserver"].args["audit-log-maxage"] = "30"
    return c


def plan(c: cluster_pb2.Cluster, endpoint: Endpoint, **options: Any) -> Plan:
    opts = HostedOptions(**options)
    return Plan(c, opts, naming.namespace(c), endpoint, endpoint.port, opts.etcd_replicas)


def rendered(p: Plan, cas: pki.ClusterCAs) -> list[dict[str, Any]]:
    files = certificates.secret_files(p, cas, {})
    sums = {name: certificates.checksum(data) for name, data in files.items()}
    return [
        control_plane.namespace(p),
        control_plane.endpoint_service(p),
        *(certificates.secret(p, name, data) for name, data in files.items()),
        *control_plane.etcd(p, sums[certificates.ETCD_SECRET]),
        *control_plane.apiserver(p, sums[certificates.APISERVER_SECRET]),
        *control_plane.controller_manager(p, sums[certificates.CONTROLLER_MANAGER_SECRET]),
        *control_plane.scheduler(p, sums[certificates.SCHEDULER_SECRET]),
        *network_policy.policies(p),
    ]


@pytest.mark.parametrize("version", META_VERSIONS)
@pytest.mark.parametrize(
    ("service_type", "endpoint"),
    [("LoadBalancer", Endpoint("203.0.113.10", 6443)), ("NodePort", Endpoint("api.example.com", 31443))],
)
def test_every_meta_object_is_valid_for_the_meta_clusters_version(
    version: str, service_type: str, endpoint: Endpoint
) -> None:
    p = plan(
        cluster(),
        endpoint,
        service_type=service_type,
        etcd_storage_class="fast",
        meta_pod_cidrs=["10.244.0.0/16", "fd00:10:244::/56"],
        meta_service_cidrs=["10.96.0.0/12"],
        denied_egress_cidrs=["169.254.169.254/32"],
        metrics_namespace_labels={"kubernetes.io/metadata.name": "monitoring"},
    )
    objects = rendered(p, pki.ClusterCAs.generate())
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "Deployment", "Namespace", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service", "StatefulSet"
    ]  # fmt: skip
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"]["labels"][naming.MANAGED_BY] == naming.PLATFORM
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == p.namespace


@pytest.mark.parametrize("version", ("1.30.2", "1.31.2"))
def test_the_hosted_clusters_own_objects_are_valid_for_its_version(version: str) -> None:
    c = cluster(version=version)
    endpoint = Endpoint("203.0.113.10", 6443)
    ca = pki.ClusterCAs.generate().ca
    objects = [
        *cluster_objects.bootstrap(c, endpoint, ca.pair.cert_pem),
        *cluster_objects.kube_proxy(c, endpoint, HostedOptions().image("kube-proxy", version)),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, version.rsplit(".", 1)[0] + ".0", strict=True)
    names = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}
    # What kubeadm join reads, and the RBAC that lets a bootstrap token read it.
    assert {
        ("ConfigMap", "kube-public", "cluster-info"),
        ("ConfigMap", "kube-system", "kubeadm-config"),
        ("ConfigMap", "kube-system", "kubelet-config"),
        ("RoleBinding", "kube-public", "kubeadm:bootstrap-signer-clusterinfo"),
        ("RoleBinding", "kube-system", "kubeadm:nodes-kubeadm-config"),
        ("ClusterRoleBinding", "", "kubeadm:kubelet-bootstrap"),
        ("ClusterRoleBinding", "", "kubeadm:node-autoapprove-bootstrap"),
        ("ClusterRoleBinding", "", "kubeadm:get-nodes"),
        ("ClusterRoleBinding", "", "kubeadm:cluster-admins"),
        ("DaemonSet", "kube-system", "kube-proxy"),
    } <= names


def test_the_apiserver_certificate_names_the_endpoint_and_every_in_cluster_name() -> None:
    cas = pki.ClusterCAs.generate()
    p = plan(cluster(), Endpoint("203.0.113.10", 6443), extra_sans=["api.example.com"])
    files = certificates.secret_files(p, cas, {})
    cert = x509.load_pem_x509_certificate(files[certificates.APISERVER_SECRET]["apiserver.crt"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("203.0.113.10") in sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.96.0.1") in sans.get_values_for_type(x509.IPAddress)
    dns = set(sans.get_values_for_type(x509.DNSName))
    assert {"api.example.com", "kubernetes.default.svc.cluster.local", p.service_host("kube-apiserver")} <= dns
    assert pki.issued_by(files[certificates.APISERVER_SECRET]["apiserver.crt"], cas.ca)
    assert pki.issued_by(files[certificates.APISERVER_SECRET]["apiserver-etcd-client.crt"], cas.etcd_ca)
    assert pki.issued_by(files[certificates.APISERVER_SECRET]["front-proxy-client.crt"], cas.front_proxy_ca)
    etcd = x509.load_pem_x509_certificate(files[certificates.ETCD_SECRET]["peer.crt"])
    etcd_dns = set(etcd.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName))  # fmt: skip
    assert {p.etcd_member_host(i) for i in range(3)} <= etcd_dns


def test_certificates_that_still_hold_are_kept_and_others_are_issued_again() -> None:
    cas = pki.ClusterCAs.generate()
    p = plan(cluster(), Endpoint("203.0.113.10", 6443))
    first = certificates.secret_files(p, cas, {})
    assert certificates.secret_files(p, cas, first) == first
    moved = plan(p.cluster, Endpoint("203.0.113.11", 6443))
    second = certificates.secret_files(moved, cas, first)
    assert (
        second[certificates.APISERVER_SECRET]["apiserver.crt"] != first[certificates.APISERVER_SECRET]["apiserver.crt"]
    )
    assert second[certificates.ETCD_SECRET] == first[certificates.ETCD_SECRET]
    late = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    renewed = certificates.secret_files(p, cas, first, now=late)
    assert renewed[certificates.ETCD_SECRET]["server.crt"] != first[certificates.ETCD_SECRET]["server.crt"]
    assert renewed[certificates.ETCD_SECRET]["ca.crt"] == first[certificates.ETCD_SECRET]["ca.crt"]


def test_namespaces_are_dns_labels_unique_per_tenant_and_cluster() -> None:
    a, b = cluster("c", "a-b"), cluster("b-c", "a")
    assert naming.namespace(a) != naming.namespace(b)
    long = cluster("x" * 60, "t" * 60)
    name = naming.namespace(long)
    assert len(name) <= 63 and name.startswith("tke-t") and name[-1].isalnum()
    assert naming.namespace(long) == name  # found again by every step


def test_the_spec_may_not_rewire_the_control_plane() -> None:
    provider = HostedClusterProvider()
    c = cluster()
    assert provider.validate(c) == []
    c.spec.extra_args["kube-apiserver"].args["etcd-servers"] = "https://evil:2379"
    c.spec.extra_args["kube-dns"].args["x"] = "y"
    c.spec.machines.add(ip="10.0.0.1")
    c.spec.control_plane_endpoint.host = "10.0.0.2"
    fields = sorted(v.field for v in provider.validate(c))
    assert fields == [
        "cluster.spec.control_plane_endpoint",
        "cluster.spec.extra_args[kube-apiserver]",
        "cluster.spec.extra_args[kube-dns]",
        "cluster.spec.machines",
    ]


def over_the_meta_clusters_bound(c: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
    """`c` with extra args of its control plane one byte over MAX_ARGS_BYTES (with what it has)."""
    args = c.spec.extra_args["etcd"].args

    def left() -> int:
        given = {k: v.args for k, v in c.spec.extra_args.items()}
        return control_plane.MAX_ARGS_BYTES - control_plane.args_bytes(given)

    while left() > 4000:
        args[f"x-{len(args)}"] = "x" * 3000  # each value within the apiserver's 4096 characters
    args["experimental-x"] = "x" * (left() - len("--experimental-x=") + 1)
    return c


def test_the_control_planes_extra_args_are_bounded_in_the_shared_meta_cluster() -> None:
    provider = HostedClusterProvider()
    c = over_the_meta_clusters_bound(cluster())
    assert control_plane.args_bytes({k: v.args for k, v in c.spec.extra_args.items()}) == 16 * 1024 + 1
    [violation] = provider.validate(c)
    assert violation.field == "cluster.spec.extra_args"
    assert "take 16385 bytes; at most 16384" in violation.description
    c.spec.extra_args["etcd"].args["experimental-x"] = c.spec.extra_args["etcd"].args["experimental-x"][1:]
    assert provider.validate(c) == []
    # What never reaches the meta cluster (the workers' kubelets, kube-proxy) does not count.
    c.spec.extra_args["kubelet"].args["node-labels-extra"] = "x" * 4000
    assert provider.validate(c) == []


async def test_the_apiserver_refuses_extra_args_over_the_meta_clusters_bound(etcd_config: EtcdConfig) -> None:
    running = await start(local_config(etcd_config))
    try:
        c = over_the_meta_clusters_bound(cluster("big"))
        c.metadata.ClearField("tenant_id")
        c.metadata.ClearField("uid")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(err.value) == ["cluster.spec.extra_args"]
        del c.spec.extra_args["etcd"].args["experimental-x"]
        await running.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
    finally:
        await stop(running)


@pytest.mark.parametrize(
    ("component", "flag", "value"),
    [
        ("kube-apiserver", "etcd-servers-overrides", "/secrets#https://etcd.tke-other.svc:2379"),
        ("kube-controller-manager", "master", "https://kubernetes.default.svc"),
        ("kube-scheduler", "master", "https://kubernetes.default.svc"),
        ("etcd", "listen-client-http-urls", "http://0.0.0.0:2382"),
        ("etcd", "discovery-srv", "example.com"),
        ("etcd", "auto-tls", "true"),
        # Kubernetes' components read "_" as "-" in a flag's name: the same flags, spelled so.
        ("kube-apiserver", "etcd_servers_overrides", "/secrets#https://etcd.tke-other.svc:2379"),
        ("kube-apiserver", "etcd_servers", "https://etcd.tke-other.svc:2379"),
        ("kube-controller-manager", "service_account_private_key_file", "/tmp/key"),
        ("kube-scheduler", "bind_address", "127.0.0.1"),
        ("etcd", "listen_client_http_urls", "http://0.0.0.0:2382"),
    ],
)
def test_no_other_servers_listeners_or_tls_through_extra_args(component: str, flag: str, value: str) -> None:
    # Each would point a component away from its own control plane, or open an etcd listener
    # without the platform's TLS, in the meta cluster's shared network.
    c = cluster()
    c.spec.extra_args[component].args[flag] = value
    [violation] = HostedClusterProvider().validate(c)
    assert violation.field == f"cluster.spec.extra_args[{component}]" and flag in violation.description
    p = plan(c, Endpoint("203.0.113.10", 6443))
    rendered_flags = [
        arg
        for obj in rendered(p, pki.ClusterCAs.generate())
        if obj["kind"] in ("Deployment", "StatefulSet")
        for arg in obj["spec"]["template"]["spec"]["containers"][0]["command"]
    ]
    assert not any(arg.startswith(f"--{flag}=") for arg in rendered_flags)


def test_options_are_checked_when_the_provider_is_configured() -> None:
    with pytest.raises(ConfigError, match="service_type must be one of LoadBalancer, NodePort"):
        HostedClusterProvider(service_type="ClusterIP")
    with pytest.raises(ConfigError, match="etcd_replicas must be 1, 3 or 5"):
        HostedClusterProvider(etcd_replicas=2)


def containers_by_component(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
    }


@pytest.mark.parametrize("version", META_VERSIONS)
def test_every_control_plane_container_has_requests_and_a_memory_limit(version: str) -> None:
    # The meta cluster is shared: one tenant's etcd or API server must not take a node's memory
    # from the other tenants' control planes. CPU is not limited by default (throttling).
    objects = rendered(plan(cluster(), Endpoint("203.0.113.10", 6443)), pki.ClusterCAs.generate())
    got = {name: c["resources"] for name, c in containers_by_component(objects).items()}
    assert got == {
        "etcd": {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"memory": "4Gi"}},
        "kube-apiserver": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "kube-controller-manager": {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "kube-scheduler": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    # The operator's values over the defaults, CPU limits included where it wants them.
    resources = {
        "etcd": {"limits": {"memory": "8Gi", "cpu": "2"}, "requests": {"memory": "1Gi"}},
        "kube-apiserver": {"limits": {"cpu": "1500m"}},
    }
    objects = rendered(plan(cluster(), Endpoint("203.0.113.10", 6443), resources=resources), pki.ClusterCAs.generate())
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    got = {name: c["resources"] for name, c in containers_by_component(objects).items()}
    assert got["etcd"] == {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "8Gi", "cpu": "2"}}
    assert got["kube-apiserver"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "2Gi", "cpu": "1500m"},
    }


@pytest.mark.parametrize(
    ("resources", "problem"),
    [
        ({"etcd": {"limits": {"memory": "lots"}}}, "resources.etcd.limits.memory: 'lots' is not a quantity"),
        ({"coredns": {"limits": {"memory": "1Gi"}}}, "'coredns' is not one of etcd"),
        ({"etcd": "4Gi"}, "options.resources.etcd: expected a table"),
        ({"etcd": {"limit": {"memory": "1Gi"}}}, "'limit' is not a table requests or limits"),
        ({"etcd": {"limits": {"storage": "1Gi"}}}, "'storage' is not cpu or memory"),
        ({"kube-apiserver": {"limits": {"memory": "256Mi"}}}, "requests.memory 512Mi is more than limits.memory 256Mi"),
        ({"kube-scheduler": {"limits": {"cpu": "50m"}}}, "requests.cpu 100m is more than limits.cpu 50m"),
    ],
)
def test_resources_that_make_no_sense_are_refused_when_the_provider_is_configured(
    resources: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem.replace(".", r"\.")):
        HostedClusterProvider(resources=resources)
