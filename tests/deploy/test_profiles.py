"""Smoke tests of the deployment profiles: each deploy/*/apiserver.toml is started as the
tke-apiserver binary with only its addresses, file paths and endpoints pointed at this test's
loopback servers, and used as its users would."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import tomllib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import grpc
import tomli_w

from tests.support.aws import aws_cluster
from tests.support.controller import publish_credentials
from tests.support.etcd import EtcdProcess
from tests.support.pki import TestCA
from tests.support.ports import free_port
from tests.support.rpc import bad_request_fields, expect_error
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc, external_pb2, external_pb2_grpc, policy_pb2, policy_pb2_grpc
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc
from tke.plugins.authn.gateway import sign

ROOT = Path(__file__).resolve().parents[2]
BINARY = str(Path(sys.executable).parent / "tke-apiserver")


def profile(name: str) -> dict[str, Any]:
    with open(ROOT / "deploy" / name / "apiserver.toml", "rb") as f:
        return tomllib.load(f)


def point_at_test(config: dict[str, Any], tmp: Path, etcd: EtcdProcess, port: int, ca: TestCA) -> None:
    """Only locations change: what the profile switches on stays as it is."""
    server = ca.issue("apiserver", common_name="tke-apiserver", hosts=("127.0.0.1",))
    config["listen"]["address"] = f"127.0.0.1:{port}"
    config["listen"].pop("unix_socket", None)
    # The profiles keep the default metrics port (9464): a `make run` or any other apiserver on
    # this machine holding it made the binary exit at start.
    config["metrics_address"] = f"127.0.0.1:{free_port()}"
    config["listen"]["tls"] = {"cert_file": server.cert_file, "key_file": server.key_file}
    config["etcd"] = {"endpoints": [etcd.endpoint], "prefix": f"/profile-{uuid.uuid4().hex[:8]}"}
    for sink in config["auth"].get("audit", []):
        if "path" in sink.get("options", {}):
            sink["options"]["path"] = str(tmp / "audit.jsonl")


@asynccontextmanager
async def running(config: dict[str, Any], tmp: Path, env: dict[str, str]) -> AsyncIterator[None]:
    path = tmp / "apiserver.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    with (tmp / "apiserver.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            BINARY, "--config", str(path), env={**os.environ, **env}, stderr=log
        )
    try:
        yield
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def secure_channel(ca: TestCA, port: int) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(Path(ca.ca_file).read_bytes()))


async def test_private_cloud_profile(etcd: EtcdProcess, tmp_path: Path) -> None:
    config = profile("private-cloud")
    port = free_port()
    ca = TestCA(tmp_path / "pki")
    point_at_test(config, tmp_path, etcd, port, ca)
    env = {"TKE_TOKEN_SECRET": "p" * 40, "TKE_ADMIN_PASSWORD": "first admin password"}
    async with running(config, tmp_path, env), secure_channel(ca, port) as channel:
        auth = accounts_pb2_grpc.AuthServiceStub(channel)
        login = await auth.Login(
            accounts_pb2.LoginRequest(username="admin", password="first admin password"),
            wait_for_ready=True,
            timeout=30,
        )
        admin = [("authorization", f"Bearer {login.token}")]
        clusters = cluster_pb2_grpc.ClusterServiceStub(channel)
        c = cluster_pb2.Cluster()
        c.metadata.name = "prod"
        c.spec.type = "baremetal"
        c.spec.version = "1.30.2"
        c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
        await clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c), metadata=admin)
        user = accounts_pb2.User()
        user.metadata.name = "viewer1"
        await auth.CreateUser(accounts_pb2.CreateUserRequest(user=user, password="viewer password 1"), metadata=admin)
        binding = policy_pb2.RoleBinding()
        binding.metadata.name = "viewer1"
        binding.spec.role = "viewer"
        binding.spec.subjects.add(kind="User", name="viewer1")
        await policy_pb2_grpc.PolicyServiceStub(channel).CreateRoleBinding(
            policy_pb2.CreateRoleBindingRequest(role_binding=binding), metadata=admin
        )
        viewer_login = await auth.Login(accounts_pb2.LoginRequest(username="viewer1", password="viewer password 1"))
        viewer = [("authorization", f"Bearer {viewer_login.token}")]

        async def viewer_lists() -> cluster_pb2.ClusterList | None:
            """The role binding reaches the authorizer through a watch."""
            try:
                return await clusters.List(cluster_pb2.ListClustersRequest(), metadata=viewer)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.PERMISSION_DENIED:
                    raise
                return None

        listed = await wait_for(viewer_lists, what="the viewer's role binding taking effect")
        assert [x.metadata.name for x in listed.items] == ["prod"]
        await expect_error(
            clusters.Delete(cluster_pb2.DeleteClusterRequest(name="prod"), metadata=viewer),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        await expect_error(clusters.List(cluster_pb2.ListClustersRequest()), grpc.StatusCode.UNAUTHENTICATED)
    assert '"decision":"deny"' in (tmp_path / "audit.jsonl").read_text()


class CamAdaptor(external_pb2_grpc.ExternalAuthorizerServicer):
    async def Authorize(self, request: Any, context: Any) -> external_pb2.AuthorizeResponse:
        own = request.tenant_id == request.identity.tenant_id
        decision = external_pb2.DECISION_ALLOW if own else external_pb2.DECISION_DENY
        return external_pb2.AuthorizeResponse(decision=decision, reason="cam adaptor")


class AuditCollector(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        AuditCollector.bodies.append(self.rfile.read(int(self.headers["content-length"])))
        assert self.headers["authorization"] == "Bearer audit-token"
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


async def test_public_cloud_profile(etcd: EtcdProcess, tmp_path: Path) -> None:
    cam = grpc.aio.server()
    external_pb2_grpc.add_ExternalAuthorizerServicer_to_server(CamAdaptor(), cam)
    cam_port = cam.add_insecure_port("127.0.0.1:0")
    await cam.start()
    collector = HTTPServer(("127.0.0.1", 0), AuditCollector)
    Thread(target=collector.serve_forever, daemon=True).start()
    try:
        config = profile("public-cloud")
        port = free_port()
        ca = TestCA(tmp_path / "pki")
        point_at_test(config, tmp_path, etcd, port, ca)
        for plugin in config["auth"]["authorizers"]:
            if plugin["plugin"] == "external":
                plugin["options"]["address"] = f"127.0.0.1:{cam_port}"
        for sink in config["auth"]["audit"]:
            if sink["plugin"] == "webhook":
                sink["options"]["url"] = f"http://127.0.0.1:{collector.server_address[1]}/audit"
        secret = "q" * 40
        env = {"TKE_GATEWAY_SECRET": secret, "TKE_AUDIT_TOKEN": "audit-token"}
        async with running(config, tmp_path, env), secure_channel(ca, port) as channel:
            clusters = cluster_pb2_grpc.ClusterServiceStub(channel)

            def signed(account: str, app: str) -> list[tuple[str, str]]:
                ts, nonce = str(int(time.time())), uuid.uuid4().hex
                return [
                    ("x-tke-account", account),
                    ("x-tke-app-id", app),
                    ("x-tke-timestamp", ts),
                    ("x-tke-nonce", nonce),
                    ("x-tke-signature", sign(secret.encode(), account, app, ts, nonce)),
                ]

            # The tenant's credential, as its tke-controller publishes it.
            etcd_config = EtcdConfig(endpoints=[etcd.endpoint], prefix=config["etcd"]["prefix"])
            await publish_credentials(etcd_config, "1250000001/cloud-kubeconfig")
            c = cluster_pb2.Cluster()
            c.metadata.name = "cloud"
            c.spec.type = "imported"
            c.spec.api_server_url = "https://10.1.2.3:6443"
            c.spec.credential_ref = "cloud-kubeconfig"
            created = await clusters.Create(
                cluster_pb2.CreateClusterRequest(cluster=c), metadata=signed("100001", "1250000001"),
                wait_for_ready=True, timeout=30,
            )  # fmt: skip
            assert created.metadata.tenant_id == "1250000001"
            # The profile's aws limits refuse what a tenant may not launch, before it is stored.
            pricey = aws_cluster("ami-0123456789abcdef0")
            pricey.spec.aws.control_plane.machine.instance_type = "m6i.4xlarge"
            err = await expect_error(
                clusters.Create(
                    cluster_pb2.CreateClusterRequest(cluster=pricey), metadata=signed("100001", "1250000001")
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            assert bad_request_fields(err) == ["cluster.spec.aws.control_plane.machine.instance_type"]
            assert "(aws option allowed_instance_types)" in (err.details() or "")
            await expect_error(
                clusters.Get(
                    cluster_pb2.GetClusterRequest(name="cloud", tenant_id="1250000001"),
                    metadata=signed("200002", "1250000002"),
                ),
                grpc.StatusCode.NOT_FOUND,  # another tenant's object, whether it exists or not
            )
            await expect_error(clusters.List(cluster_pb2.ListClustersRequest()), grpc.StatusCode.UNAUTHENTICATED)
            await wait_for(lambda: AuditCollector.bodies, what="the webhook sink delivering")
    finally:
        collector.shutdown()
        await cam.stop(0)
