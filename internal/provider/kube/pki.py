"""The cluster PKI, in kubeadm's layout: a cluster CA, an etcd CA and a front-proxy CA, and the
certificates each component presents, with the subject alternative names clients check.

Keys are ECDSA P-256: Kubernetes accepts them everywhere (serving, client, service account
signing as ES256) and they are generated in microseconds instead of RSA's tens of
milliseconds. Certificates are valid for `days` (one year by default, as kubeadm's).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tke.internal.provider.errors import PermanentError

CA_DAYS = 3650
CERT_DAYS = 365
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateAuthority:
    def __init__(self, pair: KeyPair) -> None:
        self.pair = pair
        self.cert = pair.cert
        loaded = serialization.load_pem_private_key(pair.key_pem, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError("CA key must be an EC key")
        self.key = loaded

    @classmethod
    def generate(cls, cn: str, days: int = CA_DAYS) -> CertificateAuthority:
        key = new_key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key)))

    def issue(
        self,
        cn: str,
        *,
        orgs: Sequence[str] = (),
        dns: Iterable[str] = (),
        ips: Iterable[IPAddress] = (),
        server: bool = False,
        client: bool = False,
        days: int = CERT_DAYS,
        lifetime: datetime.timedelta | None = None,
    ) -> KeyPair:
        """A certificate for `cn`, valid for `lifetime` (or `days`), never past the CA's own end."""
        key = new_key()
        now = _now()
        valid = lifetime if lifetime is not None else datetime.timedelta(days=days)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + valid, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns)]
        names += [x509.IPAddress(ip) for ip in dict.fromkeys(ips)]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


def service_account_keys() -> tuple[bytes, bytes]:
    """The key pair kube-apiserver signs service account tokens with: (sa.key, sa.pub)."""
    key = new_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key_pem(key), public


def first_service_ip(service_cidr: str) -> IPAddress:
    """The ClusterIP of the `kubernetes` service: the first address of the service range. The
    range must hold the cluster DNS Service's tenth address too (the apiserver refuses smaller
    ones; an object stored before that rule fails its step here, for good)."""
    net = ipaddress.ip_network(service_cidr, strict=False)
    if net.num_addresses < 10:
        raise PermanentError(
            f"service range {service_cidr} is too small: the cluster DNS Service takes its tenth address"
        )
    return net[1]


def apiserver_sans(
    *,
    service_cidr: str,
    dns_domain: str,
    addresses: Sequence[str],
    hostnames: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> tuple[list[str], list[IPAddress]]:
    """DNS names and IPs a client may use to reach kube-apiserver: its in-cluster service
    names, the service's ClusterIP, every control-plane address and host name, loopback, and
    the operator's `extra` (load balancers), split by whether they are IPs."""
    domain = dns_domain or "cluster.local"
    dns = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{domain}",
        "localhost",
    ]
    ips: list[IPAddress] = [first_service_ip(service_cidr), ipaddress.ip_address("127.0.0.1")]
    for value in [*addresses, *hostnames, *extra]:
        try:
            ips.append(ipaddress.ip_address(value))
        except ValueError:
            dns.append(value)
    return list(dict.fromkeys(dns)), list(dict.fromkeys(ips))


@dataclass(frozen=True)
class ClusterCAs:
    """The CAs of a cluster and the service account keys: what every master shares."""

    ca: CertificateAuthority
    etcd_ca: CertificateAuthority
    front_proxy_ca: CertificateAuthority
    sa_key: bytes
    sa_pub: bytes

    @classmethod
    def generate(cls) -> ClusterCAs:
        sa_key, sa_pub = service_account_keys()
        return cls(
            CertificateAuthority.generate("kubernetes"),
            CertificateAuthority.generate("etcd-ca"),
            CertificateAuthority.generate("front-proxy-ca"),
            sa_key,
            sa_pub,
        )

    def files(self) -> dict[str, bytes]:
        """Paths relative to the PKI directory, in kubeadm's layout."""
        return {
            "ca.crt": self.ca.pair.cert_pem,
            "ca.key": self.ca.pair.key_pem,
            "etcd/ca.crt": self.etcd_ca.pair.cert_pem,
            "etcd/ca.key": self.etcd_ca.pair.key_pem,
            "front-proxy-ca.crt": self.front_proxy_ca.pair.cert_pem,
            "front-proxy-ca.key": self.front_proxy_ca.pair.key_pem,
            "sa.key": self.sa_key,
            "sa.pub": self.sa_pub,
        }

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> ClusterCAs:
        return cls(
            CertificateAuthority(KeyPair(files["ca.crt"], files["ca.key"])),
            CertificateAuthority(KeyPair(files["etcd/ca.crt"], files["etcd/ca.key"])),
            CertificateAuthority(KeyPair(files["front-proxy-ca.crt"], files["front-proxy-ca.key"])),
            files["sa.key"],
            files["sa.pub"],
        )


# ca.crt last: its presence on a machine means the whole set was written.
CA_FILES = (
    "ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "sa.key",
    "sa.pub",
    "ca.crt",
)


def issued_by(cert_pem: bytes, ca: CertificateAuthority) -> bool:
    """Whether `cert_pem` parses and carries a valid signature of `ca`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def ca_cert_hash(cert_pem: bytes) -> str:
    """kubeadm's discovery pin of a CA: "sha256:" and the hex SHA-256 of the certificate's
    DER-encoded SubjectPublicKeyInfo (what --discovery-token-ca-cert-hash expects)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()
