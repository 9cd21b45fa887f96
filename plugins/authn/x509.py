"""Client certificates (mutual TLS): the certificate's CN is the user, its O entries the
groups, and the tenant comes from a mapping (by user, then by group) or from a certificate
extension. The TLS layer has already verified the chain against listen.tls.client_ca_file and
the validity period; a call without a certificate is "not mine". Entry point `x509` of
`tke.authn`; options `tenants` (table name -> tenant), `tenant_extension_oid` (a UTF8String
extension), `default_tenant`."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from tke.internal.auth.authn import AuthenticationError, Credentials
from tke.internal.auth.identity import DEFAULT_TENANT, Identity


class X509:
    def __init__(
        self,
        context: Any = None,
        *,
        tenants: dict[str, str] | None = None,
        tenant_extension_oid: str = "",
        default_tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.tenants = dict(tenants or {})
        self.oid = ObjectIdentifier(tenant_extension_oid) if tenant_extension_oid else None
        self.default_tenant = default_tenant

    def _tenant(self, cert: x509.Certificate, user: str, groups: tuple[str, ...]) -> str:
        if self.oid is not None:
            try:
                ext = cert.extensions.get_extension_for_oid(self.oid)
            except x509.ExtensionNotFound:
                pass
            else:
                value = ext.value
                raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
                # DER UTF8String: tag 0x0c, short length.
                if len(raw) >= 2 and raw[0] == 0x0C and raw[1] == len(raw) - 2:
                    return raw[2:].decode()
        for name in (user, *groups):
            if name in self.tenants:
                return self.tenants[name]
        return self.default_tenant

    async def authenticate(self, credentials: Credentials) -> Identity | None:
        if not credentials.peer_certificate_pem:
            return None
        try:
            cert = x509.load_pem_x509_certificate(credentials.peer_certificate_pem)
        except ValueError:
            raise AuthenticationError("unreadable client certificate") from None
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not common_names:
            raise AuthenticationError("client certificate has no common name")
        user = str(common_names[0].value)
        groups = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        return Identity(
            user=user, groups=groups, tenant_id=self._tenant(cert, user, groups), uid=f"x509:{cert.serial_number:x}"
        )
