"""The stand-in for tests: `running(directory)` starts it on a loopback port in a thread of its
own (with its own event loop, so synchronous clients such as the official Python client can
call it from a test), with a throwaway CA that signs its serving certificate and the client
certificates of `kubeconfig()`; it stops it on exit."""

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
from tests.support.pki import TestCA


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
    tls: tuple[str, str, str] | None = None,
) -> Iterator[StandIn]:
    """`tls`: (serving certificate, its key, client CA) files, for a stand-in that plays a
    cluster whose CA the test did not make (the platform's); `ca` then only signs the
    certificates of kubeconfig()."""
    ca = TestCA(directory / "pki", name="kubernetes")
    if tls is None:
        serving = ca.issue("apiserver", common_name="kube-apiserver", hosts=("127.0.0.1", "localhost"))
        tls = (serving.cert_file, serving.key_file, ca.ca_file)
    context = tls_context(*tls)
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()

    async def start() -> None:
        registry = Registry(Validator(kubernetes_version), history=history)
        options = Options(kubernetes_version=kubernetes_version, bookmark_interval=bookmark_interval)
        server = KubeAPIServer(registry, Authenticator(tokens), options)
        runner = web.AppRunner(server.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
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
        yield StandIn(f"https://127.0.0.1:{started['port']}", ca, server, loop, directory)
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
