"""The imported provider against a small HTTPS server standing in for an existing cluster's
API server (TLS with a test CA, a bearer token): verify, record version and address, keep
checking /healthz (Running -> Failed/Unhealthy -> Running), and a refused token is permanent."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.apiserver import Running
from tests.support.controller import controller_config, credentials_published, publish_credentials
from tests.support.pki import TestCA
from tests.support.waiting import wait_for
from tke.internal.controller.manager import Controller
from tke.internal.controller.progress import find
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2

pytestmark = pytest.mark.timeout(60)
TOKEN = "imported-token"


class FakeKubeAPI:
    def __init__(self, directory: Path) -> None:
        self.ca = TestCA(directory)
        self.healthy = True
        files = self.ca.issue("kube", common_name="kube-apiserver", hosts=("127.0.0.1",))
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, b"Unauthorized")
                elif self.path == "/version":
                    self._send(200, json.dumps({"gitVersion": "v1.29.4", "platform": "linux/amd64"}).encode())
                elif self.path == "/healthz":
                    self._send(200 if outer.healthy else 500, b"ok" if outer.healthy else b"etcd failed")
                else:
                    self._send(404, b"not found")

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(files.cert_file, files.key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKubeAPI]:
    fake = FakeKubeAPI(tmp_path / "pki")
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


@contextlib.asynccontextmanager
async def controller(api: Running, etcd_config: EtcdConfig, kube: FakeKubeAPI) -> AsyncIterator[None]:
    config = controller_config(
        api.address,
        etcd_config,
        health_interval=0.3,
        credentials={
            "default/edge": CredentialConfig(token_env="TKE_TEST_EDGE_TOKEN", ca_file=kube.ca.ca_file),
            "default/wrong": CredentialConfig(token_env="TKE_TEST_WRONG_TOKEN", ca_file=kube.ca.ca_file),
        },
    )
    task = asyncio.create_task(Controller(config).run())
    try:
        await credentials_published(etcd_config, "default/edge", "default/wrong")
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def imported(name: str, url: str, credential: str) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name = name
    c.spec.type = "imported"
    c.spec.api_server_url = url
    c.spec.credential_ref = credential
    return c


async def test_an_imported_cluster_is_verified_recorded_and_health_checked(
    api: Running, etcd_config: EtcdConfig, kube: FakeKubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TKE_TEST_EDGE_TOKEN", TOKEN)
    monkeypatch.setenv("TKE_TEST_WRONG_TOKEN", "nope")
    await publish_credentials(etcd_config, "default/edge", "default/wrong")  # as the controller will
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=imported("edge", kube.url, "edge")))
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=imported("denied", kube.url, "wrong")))

    def phase(name: str, want: int, reason: str = "") -> Any:
        async def check() -> cluster_pb2.Cluster | None:
            c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name))
            return c if c.status.phase == want and (not reason or c.status.reason == reason) else None

        return check

    async with controller(api, etcd_config, kube):
        c = await wait_for(phase("edge", cluster_pb2.CLUSTER_PHASE_RUNNING, "Healthy"))
        assert c.status.version == "1.29.4"
        assert [(a.type, a.host, a.port) for a in c.status.addresses] == [
            ("Advertise", "127.0.0.1", kube.server.server_address[1])
        ]
        kube.healthy = False
        c = await wait_for(phase("edge", cluster_pb2.CLUSTER_PHASE_FAILED, "Unhealthy"))
        healthy = find(c.status.conditions, "Healthy")
        assert healthy is not None and "HTTP 500" in healthy.message
        kube.healthy = True
        await wait_for(phase("edge", cluster_pb2.CLUSTER_PHASE_RUNNING, "Healthy"))
        d = await wait_for(phase("denied", cluster_pb2.CLUSTER_PHASE_FAILED))
    assert "credential refused (401)" in d.status.message
