"""Every kubeadm, kubelet and kube-proxy document the platform writes matches the field lists of
Kubernetes' reference documentation (tests/support/kubeadm_reference.py), for both kubeadm API
versions, for init, control-plane join and worker join; and the pieces around them: the CA
pin, the endpoint rules, the managed VIP's files."""

from __future__ import annotations

import hashlib
import subprocess

import pytest
import yaml

from tests.support import kubeadm_reference
from tke.internal.provider import endpoint, nodes
from tke.internal.provider.kube import config, pki, vip
from tke.platform.v1 import cluster_pb2


def _cluster(version: str) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name = "prod"
    c.spec.version = version
    c.spec.network.pod_cidr = "10.244.0.0/16"
    c.spec.network.service_cidr = "10.96.0.0/12"
    c.spec.extra_args["kube-apiserver"].args["audit-log-maxage"] = "30"
    c.spec.extra_args["etcd"].args["quota-backend-bytes"] = "8589934592"
    c.spec.extra_args["kubelet"].args["max-pods"] = "200"
    c.spec.extra_args["kube-proxy"].args["proxy-mode"] = "ipvs"
    return c


def _every_document(version: str) -> list[dict[str, object]]:
    c = _cluster(version)
    master = config.Node("m1", "10.0.0.11", {"zone": "a"}, control_plane=True)
    worker = config.Node("w1", "10.0.0.21", {"pool": "x"}, [{"key": "k", "value": "v", "effect": "NoSchedule"}])
    token = config.BootstrapToken(nodes.new_bootstrap_token(), 1800, "tke: install")
    discovery = config.Discovery("10.0.0.100:8443", token.token, ["sha256:" + "0" * 64])
    return [
        config.cluster_configuration(c, "10.0.0.100:8443", ["10.0.0.100", "10.0.0.11"]),
        config.init_configuration(c, master, token),
        config.join_configuration(c, master, discovery),
        config.join_configuration(c, worker, discovery),
        config.kubelet_configuration(c),
        config.kube_proxy_configuration(c),
    ]


@pytest.mark.parametrize(
    ("version", "api"), [("1.30.2", "kubeadm.k8s.io/v1beta3"), ("1.31.0", "kubeadm.k8s.io/v1beta4")]
)
def test_every_document_matches_the_reference_of_its_api_version(version: str, api: str) -> None:
    docs = _every_document(version)
    for doc in docs:
        assert kubeadm_reference.errors(doc) == [], doc["kind"]
    kubeadm_docs = [d for d in docs if str(d["apiVersion"]).startswith("kubeadm")]
    assert {d["apiVersion"] for d in kubeadm_docs} == {api}
    cc, init, cp_join, worker_join = kubeadm_docs
    args = cc["apiServer"]["extraArgs"]  # type: ignore[index]
    if api.endswith("v1beta4"):
        assert args == [{"name": "audit-log-maxage", "value": "30"}]
        assert cc["proxy"] == {}
    else:
        assert args == {"audit-log-maxage": "30"}
    assert "controlPlaneEndpoint" not in cp_join and "controlPlaneEndpoint" not in worker_join
    assert cp_join["controlPlane"] == {"localAPIEndpoint": {"advertiseAddress": "10.0.0.11", "bindPort": 6443}}
    assert "controlPlane" not in worker_join
    assert "file" not in worker_join["discovery"]  # type: ignore[operator]
    # Written out, never left unset: a master keeps kubeadm's control-plane taint.
    assert init["nodeRegistration"]["taints"] == [config.CONTROL_PLANE_TAINT]  # type: ignore[index]
    # The documents survive YAML as kubeadm reads them.
    assert list(yaml.safe_load_all(config.documents(*docs))) == docs


def test_the_reference_catches_what_kubeadm_refuses() -> None:
    join = _every_document("1.31.0")[3]
    bad = {**join, "controlPlaneEndpoint": "10.0.0.100:8443"}
    assert kubeadm_reference.errors(bad) == ["controlPlaneEndpoint: unknown field of JoinConfiguration"]
    missing = {k: v for k, v in join.items() if k != "discovery"}
    assert "discovery: required field of JoinConfiguration is missing" in kubeadm_reference.errors(missing)
    v1beta3_args = _every_document("1.30.2")[0]
    mixed = {**v1beta3_args, "apiVersion": "kubeadm.k8s.io/v1beta4"}
    assert "apiServer.extraArgs: want a list of Arg, got dict" in kubeadm_reference.errors(mixed)
    token = _every_document("1.31.0")[1]
    token["bootstrapTokens"][0]["token"] = "ABCDEF.0123456789abcdef"  # type: ignore[index]
    assert kubeadm_reference.errors(token) != []


def test_the_ca_pin_is_the_sha256_of_the_public_key_info_as_openssl_computes_it() -> None:
    ca = pki.CertificateAuthority.generate("kubernetes")
    # kubeadm's documented way: openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256
    public = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"], input=ca.pair.cert_pem, capture_output=True, check=True
    )
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=public.stdout, capture_output=True, check=True
    )
    assert pki.ca_cert_hash(ca.pair.cert_pem) == "sha256:" + hashlib.sha256(der.stdout).hexdigest()


def test_bootstrap_tokens_have_kubeadms_format() -> None:
    tokens = {nodes.new_bootstrap_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(kubeadm_reference._TOKEN.match(t) for t in tokens)


def _spec(machines: int, **fields: object) -> cluster_pb2.Cluster:
    c = _cluster("1.31.0")
    for i in range(machines):
        c.spec.machines.add(ip=f"10.0.0.{11 + i}", credential_ref="k")
    for name, value in fields.items():
        getattr(c.spec, name).CopyFrom(value)
    return c


def test_endpoint_options() -> None:
    single = _spec(1)
    assert endpoint.violations(single) == [] and endpoint.of(single).address == "10.0.0.11:6443"
    given = _spec(3, control_plane_endpoint=cluster_pb2.ControlPlaneEndpoint(host="api.example.com"))
    assert endpoint.violations(given) == [] and endpoint.of(given).url == "https://api.example.com:6443"
    managed = _spec(3, control_plane_vip=cluster_pb2.ManagedVIP(address="10.0.0.100", interface="eth0"))
    assert endpoint.violations(managed) == []
    assert endpoint.of(managed) == endpoint.Endpoint("10.0.0.100", 8443, managed_vip=True)
    # Several masters need an endpoint; both kinds at once, or a VIP on a master, are refused.
    assert [v.field for v in endpoint.violations(_spec(3))] == ["cluster.spec.control_plane_endpoint"]
    both = _spec(
        3,
        control_plane_endpoint=cluster_pb2.ControlPlaneEndpoint(host="lb"),
        control_plane_vip=cluster_pb2.ManagedVIP(address="10.0.0.100", interface="eth0"),
    )
    assert "not both" in endpoint.violations(both)[0].description
    on_master = _spec(3, control_plane_vip=cluster_pb2.ManagedVIP(address="10.0.0.11", interface="eth0"))
    assert "free address" in endpoint.violations(on_master)[0].description
    # Once installed, the endpoint never changes; the single master that is the endpoint stays.
    single.status.control_plane_endpoint = "10.0.0.11:6443"
    single.spec.machines.add(ip="10.0.0.12", credential_ref="k")
    assert endpoint.violations(single) == []  # scale out keeps the recorded endpoint
    del single.spec.machines[0]
    assert "cannot leave spec.machines" in endpoint.violations(single)[0].description
    managed.status.control_plane_endpoint = "10.0.0.100:8443"
    managed.spec.control_plane_vip.port = 9443
    assert "cannot change" in endpoint.violations(managed)[0].description


def test_the_managed_vip_files_follow_kubeadms_ha_guide() -> None:
    config_ = vip.VIPConfig("10.0.0.100", 8443, "eth0", 51, "s3cr3t!!", [("m1", "10.0.0.11"), ("m2", "10.0.0.12")])
    first, other = vip.files(config_, first=True), vip.files(config_, first=False)
    assert set(first) == {
        "/etc/keepalived/keepalived.conf",
        "/etc/keepalived/check_apiserver.sh",
        "/etc/haproxy/haproxy.cfg",
        "/etc/kubernetes/manifests/keepalived.yaml",
        "/etc/kubernetes/manifests/haproxy.yaml",
    }
    keepalived = first["/etc/keepalived/keepalived.conf"][0].decode()
    assert "state MASTER" in keepalived and "priority 101" in keepalived and "virtual_router_id 51" in keepalived
    assert "state BACKUP" in other["/etc/keepalived/keepalived.conf"][0].decode()
    haproxy = first["/etc/haproxy/haproxy.cfg"][0].decode()
    assert "bind *:8443" in haproxy and "server m1 10.0.0.11:6443 check" in haproxy
    pod = yaml.safe_load(first["/etc/kubernetes/manifests/haproxy.yaml"][0])
    assert pod["kind"] == "Pod" and pod["spec"]["hostNetwork"] is True
    # A changed backend list changes the manifest, so the kubelet restarts haproxy.
    fewer = vip.VIPConfig("10.0.0.100", 8443, "eth0", 51, "s3cr3t!!", [("m1", "10.0.0.11")])
    assert vip.haproxy_manifest(fewer) != vip.haproxy_manifest(config_)
