"""Authentication by client certificate, by a trusted gateway, and by external services over
our gRPC contracts; a plugin shipped as its own pip package."""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.pki import TestCA
from tests.support.rpc import expect_error
from tke.auth.v1 import external_pb2, external_pb2_grpc
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.rpc.server import ListenConfig, TLSConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc
from tke.plugins.authn.gateway import sign

Code = grpc.StatusCode


def read(path: str) -> bytes:
    return Path(path).read_bytes()


# -- x509 -----------------------------------------------------------------------------------


@pytest.fixture
async def mtls(etcd_config: EtcdConfig, tmp_path: Path) -> AsyncIterator[tuple[Running, TestCA]]:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", common_name="apiserver", hosts=("127.0.0.1",))
    tls = TLSConfig(server.cert_file, server.key_file, client_ca_file=ca.ca_file)
    auth = AuthConfig(
        authenticators=[PluginConfig("x509", {"tenants": {"ops": "team-ops"}})],
        authorizers=[PluginConfig("policy")],
    )
    api = await start(
        replace(local_config(etcd_config), listen=ListenConfig(address="127.0.0.1:0", tls=tls), auth=auth)
    )
    try:
        yield api, ca
    finally:
        await stop(api)


async def call_with(api: Running, ca: TestCA, cert: Any = None) -> cluster_pb2.ClusterList:
    creds = grpc.ssl_channel_credentials(
        read(ca.ca_file),
        private_key=read(cert.key_file) if cert else None,
        certificate_chain=read(cert.cert_file) if cert else None,
    )
    async with grpc.aio.secure_channel(api.address, creds) as ch:
        return await cluster_pb2_grpc.ClusterServiceStub(ch).List(cluster_pb2.ListClustersRequest(), timeout=30)


async def test_client_certificates(mtls: tuple[Running, TestCA], tmp_path: Path) -> None:
    api, ca = mtls
    admin = ca.issue("admin", common_name="root", organizations=("tke:platform-admins",), client=True)
    ops = ca.issue("ops", common_name="carol", organizations=("ops",), client=True)
    listed = await call_with(api, ca, admin)
    assert listed.metadata.resource_version
    # The ops group maps to tenant team-ops; without a role binding there she is denied.
    err = await expect_error(call_with(api, ca, ops), Code.PERMISSION_DENIED)
    assert "team-ops" in (err.details() or "")
    # No certificate, another CA's, or an expired one: the handshake fails.
    stranger = TestCA(tmp_path / "other", name="stranger").issue("x", common_name="root", client=True)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    expired = ca.issue("old", common_name="root", client=True, not_before=past, valid_for=datetime.timedelta(days=1))
    for cert in (None, stranger, expired):
        await expect_error(call_with(api, ca, cert), Code.UNAVAILABLE)


# -- gateway --------------------------------------------------------------------------------

GATEWAY_SECRET = "g" * 40


@pytest.fixture
async def gateway(etcd_config: EtcdConfig, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    monkeypatch.setenv("TKE_TEST_GATEWAY_SECRET", GATEWAY_SECRET)
    auth = AuthConfig(
        authenticators=[PluginConfig("gateway", {"secret_env": "TKE_TEST_GATEWAY_SECRET", "window": 60})],
        authorizers=[PluginConfig("tests.support.auth_plugins:TenantAdmin")],
    )
    api = await start(replace(local_config(etcd_config), auth=auth))
    try:
        yield api
    finally:
        await stop(api)


def gateway_headers(
    account: str, app: str, *, ts: int | None = None, nonce: str = "", secret: str = GATEWAY_SECRET
) -> list[tuple[str, str]]:
    timestamp = str(ts if ts is not None else int(time.time()))
    nonce = nonce or uuid.uuid4().hex
    return [
        ("x-tke-account", account),
        ("x-tke-app-id", app),
        ("x-tke-timestamp", timestamp),
        ("x-tke-nonce", nonce),
        ("x-tke-signature", sign(secret.encode(), account, app, timestamp, nonce)),
    ]


async def test_gateway_headers_are_believed_only_when_signed_fresh_and_new(gateway: Running) -> None:
    stub = gateway.clusters
    md = gateway_headers("100001", "1250000001")
    created = await stub.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("cloud")), metadata=md)
    assert created.metadata.tenant_id == "1250000001"
    err = await expect_error(stub.List(cluster_pb2.ListClustersRequest(), metadata=md), Code.UNAUTHENTICATED)
    assert "replayed" in (err.details() or "")
    old = gateway_headers("100001", "1250000001", ts=int(time.time()) - 600)
    await expect_error(stub.List(cluster_pb2.ListClustersRequest(), metadata=old), Code.UNAUTHENTICATED)
    forged = gateway_headers("100001", "1250000002", secret="f" * 40)
    err = await expect_error(stub.List(cluster_pb2.ListClustersRequest(), metadata=forged), Code.UNAUTHENTICATED)
    assert "signature" in (err.details() or "")
    unsigned = [("x-tke-account", "100001"), ("x-tke-app-id", "1250000001")]
    await expect_error(stub.List(cluster_pb2.ListClustersRequest(), metadata=unsigned), Code.UNAUTHENTICATED)
    # Another app id is another tenant.
    other = await stub.List(cluster_pb2.ListClustersRequest(), metadata=gateway_headers("100002", "1250000002"))
    assert list(other.items) == []


# -- external authenticator and authorizer --------------------------------------------------


class Accounts(external_pb2_grpc.ExternalAuthenticatorServicer):
    calls = 0

    async def Authenticate(self, request: Any, context: Any) -> external_pb2.AuthenticateResponse:
        Accounts.calls += 1
        if request.token == "good":
            return external_pb2.AuthenticateResponse(
                authenticated=True, identity=external_pb2.Identity(user="dave", groups=["dev"], tenant_id="corp")
            )
        if request.token == "locked":
            return external_pb2.AuthenticateResponse(error="account locked")
        return external_pb2.AuthenticateResponse()


class Cam(external_pb2_grpc.ExternalAuthorizerServicer):
    async def Authorize(self, request: Any, context: Any) -> external_pb2.AuthorizeResponse:
        if request.verb in ("get", "list", "watch") and request.tenant_id == request.identity.tenant_id:
            return external_pb2.AuthorizeResponse(decision=external_pb2.DECISION_ALLOW, reason="cam: read ok")
        return external_pb2.AuthorizeResponse(decision=external_pb2.DECISION_DENY, reason="cam: read-only account")


async def test_external_authenticator_and_authorizer(etcd_config: EtcdConfig) -> None:
    ext = grpc.aio.server()
    external_pb2_grpc.add_ExternalAuthenticatorServicer_to_server(Accounts(), ext)
    external_pb2_grpc.add_ExternalAuthorizerServicer_to_server(Cam(), ext)
    port = ext.add_insecure_port("127.0.0.1:0")
    await ext.start()
    auth = AuthConfig(
        authenticators=[PluginConfig("external", {"address": f"127.0.0.1:{port}", "cache_ttl": 30})],
        authorizers=[PluginConfig("external", {"address": f"127.0.0.1:{port}"})],
    )
    api = await start(replace(local_config(etcd_config), auth=auth))
    try:
        good = [("authorization", "Bearer good")]
        await api.clusters.List(cluster_pb2.ListClustersRequest(), metadata=good)
        await api.clusters.List(cluster_pb2.ListClustersRequest(), metadata=good)
        assert Accounts.calls == 1  # cached
        err = await expect_error(
            api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("x")), metadata=good),
            Code.PERMISSION_DENIED,
        )
        assert "cam: read-only account" in (err.details() or "")
        err = await expect_error(
            api.clusters.List(cluster_pb2.ListClustersRequest(), metadata=[("authorization", "Bearer locked")]),
            Code.UNAUTHENTICATED,
        )
        assert "account locked" in (err.details() or "")
        await expect_error(
            api.clusters.List(cluster_pb2.ListClustersRequest(), metadata=[("authorization", "Bearer nobody")]),
            Code.UNAUTHENTICATED,
        )
        # The external services go away: fail closed.
        await ext.stop(0)
        await expect_error(
            api.clusters.List(cluster_pb2.ListClustersRequest(), metadata=[("authorization", "Bearer other")]),
            Code.UNAUTHENTICATED,
        )
    finally:
        await stop(api)
        await ext.stop(0)


# -- a plugin in its own pip package --------------------------------------------------------

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"
[project]
name = "tke-plugin-header-user"
version = "0.1.0"
[project.entry-points."tke.authn"]
header-user = "tke_plugin_header_user:HeaderUser"
[tool.setuptools]
py-modules = ["tke_plugin_header_user"]
"""
PLUGIN_MODULE = '''
from tke.internal.auth.identity import Identity

class HeaderUser:
    """Trusts an x-user header. Only for this test."""

    def __init__(self, context, *, tenant):
        self.tenant = tenant

    async def authenticate(self, credentials):
        user = credentials.metadata.get("x-user")
        return Identity(user=user, groups=("tke:platform-admins",), tenant_id=self.tenant) if user else None
'''


async def test_a_plugin_installed_as_its_own_package(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (source / "tke_plugin_header_user.py").write_text(PLUGIN_MODULE)
    target = tmp_path / "site"
    subprocess.run(  # noqa: ASYNC221 - set-up, before the servers start
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    try:
        auth = AuthConfig(
            authenticators=[PluginConfig("header-user", {"tenant": "plugged"})],
            authorizers=[PluginConfig("policy")],
        )
        api = await start(replace(local_config(etcd_config), auth=auth))
        try:
            created = await api.clusters.Create(
                cluster_pb2.CreateClusterRequest(cluster=cluster("via-plugin")), metadata=[("x-user", "zed")]
            )
            assert created.metadata.tenant_id == "plugged"
            await expect_error(api.clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED)
        finally:
            await stop(api)
    finally:
        sys.path.remove(str(target))
