"""ClusterCredentials through a real apiserver with authentication on: only platform
administrators create, read or delete them; a tenant administrator allowed everything by
policy still gets PERMISSION_DENIED; a credential is never replaced; broken key material is
refused field by field."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.support.apiserver import local_config, start, stop
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.provider import cluster_credentials
from tke.internal.provider.kube import pki
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, credential_pb2, credential_pb2_grpc

pytestmark = pytest.mark.timeout(60)


def _credential(name: str, tenant: str) -> credential_pb2.ClusterCredential:
    c = cluster_pb2.Cluster()
    c.metadata.name, c.metadata.tenant_id, c.metadata.uid = name, tenant, "uid-1"
    return cluster_credentials.to_credential(c, pki.ClusterCAs.generate())


async def test_only_platform_administrators_reach_cluster_credentials(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("admin-token,platform,u-p,tke:platform-admins,team-a\nalice-token,alice,u-a,dev,team-a\n")
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})],
        # A tenant admin: everything in the caller's own tenant.
        authorizers=[PluginConfig("tests.support.auth_plugins:TenantAdmin")],
    )
    api = await start(local_config(etcd_config, auth=auth))
    try:

        def stub(token: str) -> credential_pb2_grpc.ClusterCredentialServiceAsyncStub:
            creds = grpc.composite_channel_credentials(
                grpc.local_channel_credentials(), grpc.access_token_call_credentials(token)
            )
            channel = grpc.aio.secure_channel(api.address, creds)
            api.extra_channels.append(channel)
            return credential_pb2_grpc.ClusterCredentialServiceStub(channel)

        admin, alice = stub("admin-token"), stub("alice-token")
        stored = _credential("prod", "team-a")
        await admin.Create(credential_pb2.CreateClusterCredentialRequest(cluster_credential=stored))
        got = await admin.Get(credential_pb2.GetClusterCredentialRequest(name="prod", tenant_id="team-a"))
        assert got.spec.ca.key_pem == stored.spec.ca.key_pem

        # The tenant's own administrator: refused on every method, in its own tenant.
        for call in (
            alice.Get(credential_pb2.GetClusterCredentialRequest(name="prod")),
            alice.Create(credential_pb2.CreateClusterCredentialRequest(cluster_credential=_credential("x", "team-a"))),
            alice.Delete(credential_pb2.DeleteClusterCredentialRequest(name="prod")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "BEGIN" not in (err.value.details() or "")

        # Generated once: a second Create is refused, the first keys stay.
        again = credential_pb2.CreateClusterCredentialRequest(cluster_credential=_credential("prod", "team-a"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.Create(again)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        got = await admin.Get(credential_pb2.GetClusterCredentialRequest(name="prod", tenant_id="team-a"))
        assert got.spec.ca.cert_pem == stored.spec.ca.cert_pem

        # A key that is not the CA's own is refused, naming the field.
        broken = _credential("broken", "team-a")
        broken.spec.etcd_ca.key_pem = pki.key_pem(pki.new_key()).decode()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.Create(credential_pb2.CreateClusterCredentialRequest(cluster_credential=broken))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cluster_credential.spec.etcd_ca" in (err.value.details() or "")

        await admin.Delete(credential_pb2.DeleteClusterCredentialRequest(name="prod", tenant_id="team-a"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.Get(credential_pb2.GetClusterCredentialRequest(name="prod", tenant_id="team-a"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await stop(api)
