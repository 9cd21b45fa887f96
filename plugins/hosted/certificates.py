"""The components' certificates and kubeconfigs, issued from the cluster's CAs (its
ClusterCredential) the way kubeadm issues them on a master, as one Secret per component:

  etcd-pki                     ca.crt (etcd CA), server, peer and healthcheck-client
                               certificates; server and peer name every member
  kube-apiserver-pki           ca.crt, apiserver (serving: the endpoint, the `kubernetes`
                               Service's names and IP, its Service names in the meta cluster),
                               apiserver-kubelet-client, apiserver-etcd-client, etcd-ca.crt,
                               front-proxy-ca.crt, front-proxy-client, sa.pub, sa.key
  kube-controller-manager-pki  controller-manager.conf (system:kube-controller-manager), ca.crt
                               and ca.key (it signs the kubelets' certificates), sa.key,
                               front-proxy-ca.crt
  kube-scheduler-pki           scheduler.conf (system:kube-scheduler)

Each component mounts only its own Secret. A certificate already in a Secret is kept while it
is still what would be issued (same CA, subject, names and usages, its key, more than
RENEW_BEFORE left), so applying again changes nothing; a changed endpoint, a new CA or an
aging certificate gets a new one. These Secrets hold the cluster's CA key and service-account
key: whoever reads Secrets in the cluster's namespace of the meta cluster owns the cluster.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tke.internal.provider.kube import kubeconfig as kubeconfigs
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.config import minor
from tke.plugins.hosted import naming
from tke.plugins.hosted.plan import Plan

RENEW_BEFORE = datetime.timedelta(days=90)
ETCD_SECRET = "etcd-pki"
APISERVER_SECRET = "kube-apiserver-pki"
CONTROLLER_MANAGER_SECRET = "kube-controller-manager-pki"
SCHEDULER_SECRET = "kube-scheduler-pki"
SECRETS = (ETCD_SECRET, APISERVER_SECRET, CONTROLLER_MANAGER_SECRET, SCHEDULER_SECRET)
CONTROLLER_MANAGER_CONF = "controller-manager.conf"
SCHEDULER_CONF = "scheduler.conf"


@dataclass(frozen=True)
class Leaf:
    """A certificate kubeadm would issue: file stem, signing CA, subject, names, usages."""

    name: str
    ca: pki.CertificateAuthority
    cn: str
    orgs: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    ips: tuple[pki.IPAddress, ...] = ()
    server: bool = False
    client: bool = False

    def issue(self) -> pki.KeyPair:
        return self.ca.issue(
            self.cn, orgs=self.orgs, dns=self.dns, ips=self.ips, server=self.server, client=self.client
        )

    def holds(self, cert_pem: bytes, key_pem: bytes, now: datetime.datetime) -> bool:
        """Whether `cert_pem` (with `key_pem`) is what issue() would make, and young enough."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            return False
        if not pki.issued_by(cert_pem, self.ca) or cert.not_valid_after_utc - now < RENEW_BEFORE:
            return False
        public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(*public) != cert.public_key().public_bytes(*public):
            return False
        subject = cert.subject
        cn = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        orgs = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if cn != [self.cn] or sorted(orgs) != sorted(self.orgs):
            return False
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns, ips = set(sans.get_values_for_type(x509.DNSName)), set(sans.get_values_for_type(x509.IPAddress))
        except x509.ExtensionNotFound:
            dns, ips = set(), set()
        if dns != set(self.dns) or ips != set(self.ips):
            return False
        try:
            usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            usages = set()
        wanted = {ExtendedKeyUsageOID.SERVER_AUTH} if self.server else set()
        wanted |= {ExtendedKeyUsageOID.CLIENT_AUTH} if self.client else set()
        return usages == wanted


def _ip(value: str) -> pki.IPAddress | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _names(values: list[str]) -> tuple[tuple[str, ...], tuple[pki.IPAddress, ...]]:
    dns = tuple(dict.fromkeys(v for v in values if _ip(v) is None))
    ips = tuple(dict.fromkeys(ip for v in values if (ip := _ip(v)) is not None))
    return dns, ips


def leaves(plan: Plan, cas: pki.ClusterCAs) -> dict[str, list[Leaf]]:
    """The certificates of each Secret, as kubeadm's certs phase makes them on a master."""
    net = plan.cluster.spec.network
    dns, ips = pki.apiserver_sans(
        service_cidr=net.service_cidr,
        dns_domain=net.dns_domain,
        addresses=[plan.endpoint.host],
        extra=[*plan.service_names(naming.ENDPOINT_SERVICE), *plan.options.extra_sans],
    )
    etcd_dns, etcd_ips = _names(
        [
            "localhost",
            "127.0.0.1",
            "::1",
            *plan.service_names(naming.ETCD_SERVICE),
            *(plan.etcd_member_host(i) for i in range(plan.etcd_members)),
            *(f"{plan.etcd_member(i)}.{naming.ETCD_SERVICE}.{plan.namespace}.svc" for i in range(plan.etcd_members)),
        ]
    )
    # kubeadm (1.29 and later) gives the API server's kubelet client the group it binds to
    # cluster-admin; older clusters only know system:masters.
    admins = "kubeadm:cluster-admins" if minor(plan.version) >= (1, 29) else "system:masters"
    return {
        ETCD_SECRET: [
            Leaf("server", cas.etcd_ca, "etcd", dns=etcd_dns, ips=etcd_ips, server=True, client=True),
            Leaf("peer", cas.etcd_ca, "etcd-peer", dns=etcd_dns, ips=etcd_ips, server=True, client=True),
            Leaf("healthcheck-client", cas.etcd_ca, "kube-etcd-healthcheck-client", client=True),
        ],
        APISERVER_SECRET: [
            Leaf("apiserver", cas.ca, "kube-apiserver", dns=tuple(dns), ips=tuple(ips), server=True),
            Leaf("apiserver-kubelet-client", cas.ca, "kube-apiserver-kubelet-client", orgs=(admins,), client=True),
            Leaf("apiserver-etcd-client", cas.etcd_ca, "kube-apiserver-etcd-client", client=True),
            Leaf("front-proxy-client", cas.front_proxy_ca, "front-proxy-client", client=True),
        ],
        CONTROLLER_MANAGER_SECRET: [
            Leaf(CONTROLLER_MANAGER_CONF, cas.ca, "system:kube-controller-manager", client=True)
        ],
        SCHEDULER_SECRET: [Leaf(SCHEDULER_CONF, cas.ca, "system:kube-scheduler", client=True)],
    }


def _kubeconfig_holds(text: bytes, leaf: Leaf, server: str, now: datetime.datetime) -> bool:
    try:
        doc = yaml.safe_load(text)
        cluster = doc["clusters"][0]["cluster"]
        user = doc["users"][0]["user"]
        ca = base64.b64decode(cluster["certificate-authority-data"])
        cert = base64.b64decode(user["client-certificate-data"])
        key = base64.b64decode(user["client-key-data"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return False
    return cluster.get("server") == server and ca == leaf.ca.pair.cert_pem and leaf.holds(cert, key, now)


def secret_files(
    plan: Plan, cas: pki.ClusterCAs, existing: Mapping[str, Mapping[str, bytes]], now: datetime.datetime | None = None
) -> dict[str, dict[str, bytes]]:
    """Each Secret's files: those in `existing` (Secret name -> its data, decoded) that still
    hold, the others issued anew."""
    now = now or datetime.datetime.now(datetime.UTC)
    out: dict[str, dict[str, bytes]] = {}
    for secret, wanted in leaves(plan, cas).items():
        have = existing.get(secret, {})
        files: dict[str, bytes] = {}
        for leaf in wanted:
            if leaf.name.endswith(".conf"):
                if _kubeconfig_holds(have.get(leaf.name, b""), leaf, plan.internal_url, now):
                    files[leaf.name] = have[leaf.name]
                else:
                    user = leaf.cn
                    config = kubeconfigs.kubeconfig(
                        plan.cluster.metadata.name, plan.internal_url, cas.ca.pair.cert_pem, user, leaf.issue()
                    )
                    files[leaf.name] = config.encode()
                continue
            crt, key = f"{leaf.name}.crt", f"{leaf.name}.key"
            if leaf.holds(have.get(crt, b""), have.get(key, b""), now):
                files[crt], files[key] = have[crt], have[key]
            else:
                pair = leaf.issue()
                files[crt], files[key] = pair.cert_pem, pair.key_pem
        out[secret] = files
    out[ETCD_SECRET]["ca.crt"] = cas.etcd_ca.pair.cert_pem
    out[APISERVER_SECRET].update(
        {
            "ca.crt": cas.ca.pair.cert_pem,
            "etcd-ca.crt": cas.etcd_ca.pair.cert_pem,
            "front-proxy-ca.crt": cas.front_proxy_ca.pair.cert_pem,
            "sa.pub": cas.sa_pub,
            "sa.key": cas.sa_key,
        }
    )
    out[CONTROLLER_MANAGER_SECRET].update(
        {
            "ca.crt": cas.ca.pair.cert_pem,
            "ca.key": cas.ca.pair.key_pem,
            "sa.key": cas.sa_key,
            "front-proxy-ca.crt": cas.front_proxy_ca.pair.cert_pem,
        }
    )
    return out


def secret(plan: Plan, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": plan.namespace, "labels": naming.labels(plan.cluster)},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(files.items())},
    }


def decoded(secret: Any) -> dict[str, bytes]:
    """A Secret's data (lightkube's model or a dict), decoded."""
    data = (secret.get("data") if isinstance(secret, Mapping) else getattr(secret, "data", None)) or {}
    return {k: base64.b64decode(v) for k, v in data.items()}


def checksum(files: Mapping[str, bytes]) -> str:
    """What a pod template carries of its Secret, so that new certificates roll its pods."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return digest.hexdigest()[:16]
