"""The cluster's CAs and service-account keys, kept by the platform (ClusterCredential objects
in tke-apiserver, see proto/tke/platform/v1/credential.proto for the threat model).

`ensure_cas(store, cluster)` is how steps get them: read back when the cluster has them, else
generated once and stored. A credential is never regenerated: two controllers racing to create
it both end up with the one that was stored first (the loser reads it back). A credential left
by an earlier cluster of the same name (another uid) is replaced, since that cluster is gone.
"""

from __future__ import annotations

from typing import Protocol

from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import pki
from tke.platform.v1 import cluster_pb2, credential_pb2


class CredentialExists(Exception):
    """Create found a credential already stored under that name."""


class ClusterCredentialStore(Protocol):
    async def get(self, tenant: str, name: str) -> credential_pb2.ClusterCredential | None:
        """The stored credential, or None."""
        ...

    async def create(self, credential: credential_pb2.ClusterCredential) -> None:
        """Store it; CredentialExists when one is there already."""
        ...

    async def delete(self, tenant: str, name: str) -> None:
        """Remove it; absent is fine."""
        ...


class NoCredentialStore:
    """For controllers built without a store (unit tests of other parts)."""

    async def get(self, tenant: str, name: str) -> credential_pb2.ClusterCredential | None:
        raise PermanentError("no cluster credential store is configured")

    async def create(self, credential: credential_pb2.ClusterCredential) -> None:
        raise PermanentError("no cluster credential store is configured")

    async def delete(self, tenant: str, name: str) -> None:
        raise PermanentError("no cluster credential store is configured")


def _ca(ca: pki.CertificateAuthority) -> credential_pb2.CertificateAuthorityPEM:
    return credential_pb2.CertificateAuthorityPEM(cert_pem=ca.pair.cert_pem.decode(), key_pem=ca.pair.key_pem.decode())


def to_credential(cluster: cluster_pb2.Cluster, cas: pki.ClusterCAs) -> credential_pb2.ClusterCredential:
    cred = credential_pb2.ClusterCredential()
    cred.metadata.name = cluster.metadata.name
    cred.metadata.tenant_id = cluster.metadata.tenant_id
    cred.spec.cluster_uid = cluster.metadata.uid
    cred.spec.ca.CopyFrom(_ca(cas.ca))
    cred.spec.etcd_ca.CopyFrom(_ca(cas.etcd_ca))
    cred.spec.front_proxy_ca.CopyFrom(_ca(cas.front_proxy_ca))
    cred.spec.service_account_key_pem = cas.sa_key.decode()
    cred.spec.service_account_public_key_pem = cas.sa_pub.decode()
    return cred


def from_credential(cred: credential_pb2.ClusterCredential) -> pki.ClusterCAs:
    def ca(pem: credential_pb2.CertificateAuthorityPEM) -> pki.CertificateAuthority:
        return pki.CertificateAuthority(pki.KeyPair(pem.cert_pem.encode(), pem.key_pem.encode()))

    spec = cred.spec
    return pki.ClusterCAs(
        ca(spec.ca),
        ca(spec.etcd_ca),
        ca(spec.front_proxy_ca),
        spec.service_account_key_pem.encode(),
        spec.service_account_public_key_pem.encode(),
    )


async def ensure_cas(store: ClusterCredentialStore, cluster: cluster_pb2.Cluster) -> pki.ClusterCAs:
    tenant, name = cluster.metadata.tenant_id, cluster.metadata.name
    for _ in range(3):
        stored = await store.get(tenant, name)
        if stored is not None and stored.spec.cluster_uid == cluster.metadata.uid:
            return from_credential(stored)
        if stored is not None:
            await store.delete(tenant, name)  # an earlier cluster's keys: that cluster is gone
        try:
            await store.create(to_credential(cluster, pki.ClusterCAs.generate()))
        except CredentialExists:
            continue  # another controller stored one first: read it back
    raise TemporaryError(f"cluster {name}: its credential keeps changing under us; retrying")


async def read_cas(store: ClusterCredentialStore, cluster: cluster_pb2.Cluster) -> pki.ClusterCAs:
    """The cluster's CAs; TemporaryError when the cluster has none yet (not installed)."""
    stored = await store.get(cluster.metadata.tenant_id, cluster.metadata.name)
    if stored is None or stored.spec.cluster_uid != cluster.metadata.uid:
        raise TemporaryError(f"cluster {cluster.metadata.name} has no credentials yet")
    return from_credential(stored)
