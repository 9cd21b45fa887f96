"""Kubernetes parameter generation and step progress, as pure functions: certificates chain to
their CA with the SANs clients check, kubeconfigs parse, kubeadm configuration carries the
extra args; conditions record starts, retries, failures and resets."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.protobuf import timestamp_pb2

from tests.support.apiserver import cluster
from tke.internal.controller import progress
from tke.internal.provider.kube import config, kubeconfig, pki
from tke.platform.v1 import cluster_pb2


def _ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def test_master_certificates_chain_to_their_cas_with_the_right_sans() -> None:
    cas = pki.ClusterCAs.generate()
    files = pki.master_certificates(
        cas,
        node_name="m1",
        address="10.0.0.5",
        service_cidr="10.96.0.0/12",
        dns_domain="corp.local",
        masters=["10.0.0.5", "10.0.0.6"],
        extra_sans=["api.example.internal", "203.0.113.7"],
    )
    apiserver = x509.load_pem_x509_certificate(files["apiserver.crt"])
    apiserver.verify_directly_issued_by(cas.ca.cert)
    san = apiserver.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.corp.local",
        "localhost", "m1", "api.example.internal",
    }  # fmt: skip
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("10.96.0.1", "127.0.0.1", "10.0.0.5", "10.0.0.6", "203.0.113.7")
    }
    client = x509.load_pem_x509_certificate(files["apiserver-kubelet-client.crt"])
    client.verify_directly_issued_by(cas.ca.cert)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    x509.load_pem_x509_certificate(files["front-proxy-client.crt"]).verify_directly_issued_by(cas.front_proxy_ca.cert)
    x509.load_pem_x509_certificate(files["etcd/peer.crt"]).verify_directly_issued_by(cas.etcd_ca.cert)
    assert pki.issued_by(files["apiserver.crt"], cas.ca)
    assert not pki.issued_by(files["apiserver.crt"], pki.CertificateAuthority.generate("other"))
    again = pki.ClusterCAs.from_files(cas.files())
    assert again.ca.pair == cas.ca.pair and again.sa_pub == cas.sa_pub


def test_kubeconfigs_parse_point_at_the_server_and_carry_a_client_certificate_of_the_ca() -> None:
    ca = pki.CertificateAuthority.generate("kubernetes")
    server = kubeconfig.api_server_url("fd00::5")
    assert server == "https://[fd00::5]:6443"
    configs = kubeconfig.component_kubeconfigs(ca, "prod", server)
    configs["kubelet.conf"] = kubeconfig.node_kubeconfig(ca, "prod", server, "node-a")
    for text in configs.values():
        assert kubeconfig.servers_of(text.decode()) == [server]
        assert kubeconfig.ca_of(text.decode()) == ca.pair.cert_pem
    assert kubeconfig.ca_of("not: [valid") is None


def test_kubeadm_configuration_applies_extra_args() -> None:
    c = cluster("prod")
    c.spec.extra_args["kube-controller-manager"].args["node-cidr-mask-size"] = "24"
    c.spec.extra_args["kubelet"].args["max-pods"] = "64"
    c.spec.network.dns_domain = "corp.local"
    cc = config.cluster_configuration(c, "10.0.0.5:6443", pki_dir="/x/pki")
    assert cc["controllerManager"]["extraArgs"] == {"node-cidr-mask-size": "24"}
    assert cc["networking"] == {
        "podSubnet": "10.244.0.0/16",
        "serviceSubnet": "10.96.0.0/12",
        "dnsDomain": "corp.local",
    }
    assert cc["certificatesDir"] == "/x/pki" and cc["kubernetesVersion"] == "v1.30.2"
    join = config.join_configuration("n1", "10.0.0.9", c, "10.0.0.5:6443", labels={"a": "b"}, taints=[])
    assert join["nodeRegistration"]["kubeletExtraArgs"] == {
        "node-ip": "10.0.0.9",
        "max-pods": "64",
        "node-labels": "a=b",
    }
    assert config.kubelet_configuration(c)["clusterDomain"] == "corp.local"
    c.spec.extra_args["kube-proxy"].args.update({"proxy-mode": "ipvs", "metrics-bind-address": "0.0.0.0:10249"})
    proxy = config.kube_proxy_configuration(c)
    assert (proxy["kind"], proxy["mode"], proxy["clusterCIDR"]) == ("KubeProxyConfiguration", "ipvs", "10.244.0.0/16")
    assert config.component_flags(c, "kube-proxy") == "--metrics-bind-address=0.0.0.0:10249 --proxy-mode=ipvs"


def test_progress_records_starts_retries_failures_and_resets() -> None:
    conditions = cluster_pb2.ClusterStatus().conditions
    names = ["A", "B"]
    policy = progress.RetryPolicy(max_retries=2, base_delay=1.0, max_delay=3.0)
    assert progress.next_step(names, conditions) == "A"
    progress.start(conditions, "A", 1, _ts(10))
    progress.succeed(conditions, "A", 1, _ts(11))
    assert progress.next_step(names, conditions) == "B"
    outcomes = [progress.fail(conditions, "B", "boom", _ts(12 + i), policy, permanent=False) for i in range(3)]
    assert [(o.give_up, o.delay) for o in outcomes] == [(False, 1.0), (False, 2.0), (True, 0.0)]
    b = progress.find(conditions, "B")
    assert b is not None and b.reason == progress.FAILED and b.retries == 3 and b.last_error == "boom"
    assert progress.failed_step(conditions, names) is b
    assert progress.reset(conditions, names, _ts(20)) == ["B"]
    assert b.retries == 0 and b.reason == progress.PENDING
    explicit = progress.fail(conditions, "B", "later", _ts(21), policy, permanent=False, delay=7.5)
    assert explicit.delay == 7.5
    assert progress.fail(conditions, "B", "no", _ts(22), policy, permanent=True).give_up
    # A re-runnable plan's step is done only for the generation it ran at.
    assert progress.is_done(conditions, "A", generation=1) and not progress.is_done(conditions, "A", generation=2)
    progress.reset_plan(conditions, ["A"])
    assert progress.find(conditions, "A") is None
