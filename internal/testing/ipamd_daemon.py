"""A real tke-ipamd process for tests of its clients (tkectl, the examples): a configuration on
the caller's etcd, a unix socket in a short temporary directory (socket paths are limited to
107 bytes), readiness through grpc.health.v1, and a stop that always ends the process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BINARY = Path(sys.executable).parent / "tke-ipamd"


class IpamdDaemon:
    """`with IpamdDaemon(endpoints, prefix) as ipamd:` then call `ipamd.target` (unix:/...)."""

    def __init__(self, endpoints: list[str], prefix: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="ipamd-", dir="/tmp"))
        self.socket = str(self.workdir / "ipamd.sock")
        self.config = self.workdir / "ipamd.toml"
        self.log_path = self.workdir / "ipamd.log"
        quoted = ", ".join(f'"{e}"' for e in endpoints)
        self.config.write_text(
            f'socket = "{self.socket}"\nshutdown_grace = 1.0\nlog_level = "warning"\n\n'
            f'[storage]\nplugin = "etcd"\n[storage.options]\nendpoints = [{quoted}]\nprefix = "{prefix}"\n'
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def __enter__(self) -> IpamdDaemon:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(BINARY), "--config", str(self.config)], stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tke-ipamd exited with {self.process.returncode}: {self.log_path.read_text()}")
            if os.path.exists(self.socket) and self._healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"tke-ipamd did not become healthy in {timeout}s: {self.log_path.read_text()}")

    def _healthy(self) -> bool:
        with grpc.insecure_channel(self.target) as channel:
            try:
                resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)
