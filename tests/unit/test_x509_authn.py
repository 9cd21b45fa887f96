"""The x509 authenticator's mapping of a verified certificate to an identity."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from tke.internal.auth.authn import AuthenticationError, Credentials
from tke.plugins.authn.x509 import X509

OID = "1.3.6.1.4.1.55555.1.1"


def pem(cn: str | None, orgs: tuple[str, ...] = (), tenant_ext: str | None = None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if tenant_ext is not None:
        value = tenant_ext.encode()
        der = bytes([0x0C, len(value)]) + value  # UTF8String
        builder = builder.add_extension(x509.UnrecognizedExtension(ObjectIdentifier(OID), der), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


async def test_cn_is_the_user_and_o_the_groups() -> None:
    ident = await X509().authenticate(Credentials({}, pem("alice", ("dev", "ops"))))
    assert ident is not None
    assert (ident.user, ident.groups, ident.tenant_id) == ("alice", ("dev", "ops"), "default")


async def test_tenant_from_mapping_then_extension() -> None:
    plugin = X509(tenants={"ops": "team-ops"}, tenant_extension_oid=OID)
    by_group = await plugin.authenticate(Credentials({}, pem("bob", ("ops",))))
    assert by_group is not None and by_group.tenant_id == "team-ops"
    by_ext = await plugin.authenticate(Credentials({}, pem("bob", ("ops",), tenant_ext="from-cert")))
    assert by_ext is not None and by_ext.tenant_id == "from-cert"


async def test_no_certificate_is_not_mine_and_no_cn_is_refused() -> None:
    assert await X509().authenticate(Credentials({})) is None
    with pytest.raises(AuthenticationError):
        await X509().authenticate(Credentials({}, pem(None, ("dev",))))
