"""Validation of ClusterCredentials (tke.platform.v1.ClusterCredential): every CA must be a CA
certificate with the private key that matches it, and the service-account key pair must parse
and match, so that a credential the controller stores is one kubeadm can use. Errors name the
field, never the key material."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tke.internal.apiserver.validation import validate_metadata
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import credential_pb2

MAX_PEM = 64 * 1024


def _public_der(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _ca_error(ca: credential_pb2.CertificateAuthorityPEM) -> str | None:
    if not ca.cert_pem or not ca.key_pem:
        return "cert_pem and key_pem are required"
    if len(ca.cert_pem) > MAX_PEM or len(ca.key_pem) > MAX_PEM:
        return f"each PEM must be at most {MAX_PEM} bytes"
    try:
        cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
        key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return "cert_pem must be a PEM certificate and key_pem an unencrypted PEM private key"
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        return "the certificate is not a CA certificate (basicConstraints CA:TRUE)"
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        return "key_pem is not the private key of cert_pem"
    return None


def validate_credential(
    cred: credential_pb2.ClusterCredential, path: str = "cluster_credential"
) -> list[FieldViolation]:
    out = validate_metadata(cred.metadata, f"{path}.metadata")
    spec = cred.spec
    if not spec.cluster_uid:
        out.append(FieldViolation(f"{path}.spec.cluster_uid", "is required: the uid of the cluster"))
    for name in ("ca", "etcd_ca", "front_proxy_ca"):
        if err := _ca_error(getattr(spec, name)):
            out.append(FieldViolation(f"{path}.spec.{name}", err))
    try:
        key = serialization.load_pem_private_key(spec.service_account_key_pem.encode()[:MAX_PEM], password=None)
        public = serialization.load_pem_public_key(spec.service_account_public_key_pem.encode()[:MAX_PEM])
        if _public_der(key.public_key()) != _public_der(public):
            out.append(FieldViolation(f"{path}.spec.service_account_public_key_pem", "is not the key's public key"))
    except (ValueError, TypeError):
        out.append(
            FieldViolation(
                f"{path}.spec.service_account_key_pem",
                "service_account_key_pem and service_account_public_key_pem must be a PEM key pair",
            )
        )
    return out


def validate_credential_status(status: Any, path: str) -> list[FieldViolation]:
    return []  # ClusterCredentialStatus has no fields
