"""Real tke-ipamd processes for tests: a config file, a unix socket in a short temporary
directory (socket paths are limited to 107 bytes), readiness through grpc.health.v1, and a stop
that always ends the process (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent / "tke-ipamd"


def write_config(
    path: Path, *, socket: str, endpoints: list[str], prefix: str, extra: str = "", log_level: str = "warning"
) -> None:
    """`extra` holds top-level options (TOML lines before the first table)."""
    quoted = ", ".join(f'"{e}"' for e in endpoints)
    path.write_text(
        f"""socket = "{socket}"
release_cooldown = 5.0
shutdown_grace = 1.0
log_level = "{log_level}"
{extra}

[storage]
plugin = "etcd"
[storage.options]
endpoints = [{quoted}]
prefix = "{prefix}"
"""
    )


class IpamdProcess:
    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        endpoints: list[str],
        prefix: str,
        extra: str = "",
        log_level: str = "warning",
    ) -> None:
        self.socket = str(workdir / f"{name}.sock")
        self.config = workdir / f"{name}.toml"
        self.log_path = workdir / f"{name}.log"
        write_config(
            self.config, socket=self.socket, endpoints=endpoints, prefix=prefix, extra=extra, log_level=log_level
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        self.process = subprocess.Popen(
            [str(BIN), "--config", str(self.config)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
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
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
