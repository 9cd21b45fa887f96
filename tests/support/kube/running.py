"""The stand-in for tests: `running(directory)` starts it on a loopback port in a thread of its
own (with its own event loop, so synchronous clients such as the official Python client can
call it from a test), with a CA that signs its serving certificate and the client certificates
it trusts (a throwaway one, or a cluster's own, as kube-apiserver's --client-ca-file), and
those of `kubeconfig()`; it stops it on exit."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiohttp import web

from tests.support.kube.rbac import Authenticator, User
from tests.support.kube.registry import Registry
from tests.support.kube.server import KubeAPIServer, Options, tls_context
from tests.support.kube.validation import Validator
from tests.support.pki import CertFiles, TestCA


@dataclass
class StandIn:
    url: str
    ca: TestCA
    server: KubeAPIServer
    loop: asyncio.AbstractEventLoop
    directory: Path

    @property
    def ca_pem(self) -> bytes:
        return Path(self.ca.ca_file).read_bytes()

    def client_certificate(self, user: str, groups: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of a client certificate for `user` in `groups`."""
        files = self.ca.issue(f"client-{user.replace(':', '_')}", common_name=user, organizations=groups, client=True)
        return Path(files.cert_file).read_bytes(), Path(files.key_file).read_bytes()

    def kubeconfig(self, user: str = "", groups: tuple[str, ...] = (), token: str = "") -> str:
        """A kubeconfig for this server: with a client certificate of `user` and `groups`, or
        with a bearer token."""
        credentials: dict[str, str] = {"token": token} if token else {}
        if user:
            cert, key = self.client_certificate(user, groups)
            credentials = {
                "client-certificate-data": base64.b64encode(cert).decode(),
                "client-key-data": base64.b64encode(key).decode(),
            }
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "stand-in",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "me", "user": credentials}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "me"}}],
            "current-context": "stand-in",
        }
        return yaml.safe_dump(doc)

    def set_version(self, version: str) -> None:
        """Report this Kubernetes version from now on (an upgraded control plane)."""
        self.loop.call_soon_threadsafe(setattr, self.server.options, "kubernetes_version", version)

    def set_failing(self, *checks: str) -> None:
        """Make these health checks fail (none: all pass)."""
        self.loop.call_soon_threadsafe(self.server.options.failing.clear)
        self.loop.call_soon_threadsafe(self.server.options.failing.update, set(checks))


@contextlib.contextmanager
def running(
    directory: Path,
    *,
    kubernetes_version: str = "1.30.2",
    tokens: dict[str, User] | None = None,
    bookmark_interval: float = 60.0,
    history: int = 5000,
    ca: TestCA | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    server_names: tuple[str, ...] = (),
    serving: CertFiles | None = None,
    client_ca_file: str = "",
    bootstrap_token_auth: bool = False,
) -> Iterator[StandIn]:
    """The stand-in on `host`:`port` (0: any free port), its serving certificate and trusted
    client certificates from `ca` (default: a new one), valid for `host`, 127.0.0.1, localhost
    and `server_names` (the names clients reach it by: a VIP, a load balancer's name).
    `serving` and `client_ca_file` replace those (kube-apiserver's --tls-cert-file and
    --client-ca-file: files someone else issued); `bootstrap_token_auth` is
    --enable-bootstrap-token-auth."""
    ca = ca or TestCA(directory / "pki", name="kubernetes")
    names = tuple(dict.fromkeys((host, "127.0.0.1", "localhost", *server_names)))
    serving = serving or ca.issue("apiserver", common_name="kube-apiserver", hosts=names)
    context = tls_context(serving.cert_file, serving.key_file, client_ca_file or ca.ca_file)
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()

    async def start() -> None:
        registry = Registry(Validator(kubernetes_version), history=history)
        options = Options(kubernetes_version=kubernetes_version, bookmark_interval=bookmark_interval)
        bootstrap = registry.bootstrap_token_user if bootstrap_token_auth else None
        server = KubeAPIServer(registry, Authenticator(tokens, bootstrap=bootstrap), options)
        runner = web.AppRunner(server.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        started.update(server=server, runner=runner, port=runner.addresses[0][1])

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as err:  # handed to the test's thread
            started["error"] = err
        ready.set()
        if "error" not in started:
            loop.run_forever()

    thread = threading.Thread(target=serve, name="kube-stand-in", daemon=True)
    thread.start()
    ready.wait()
    if "error" in started:
        thread.join()
        loop.close()
        raise RuntimeError("the Kubernetes API stand-in did not start") from started["error"]  # type: ignore[misc]
    server = started["server"]
    assert isinstance(server, KubeAPIServer)
    try:
        yield StandIn(f"https://{host}:{started['port']}", ca, server, loop, directory)
    finally:

        async def stop() -> None:
            server.stop_watches()
            runner = started["runner"]
            assert isinstance(runner, web.AppRunner)
            await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
