"""Real tke-ipamd processes for tests and benchmarks: a configuration on the caller's etcd, a
unix socket in a short directory (socket paths are limited to 107 bytes), optionally a TCP
listener (TLS or plaintext), readiness through grpc.health.v1, and a stop that always ends the
process (SIGTERM, then SIGKILL); `refused_at_start` for a configuration tke-ipamd must refuse."""

from __future__ import annotations

import json
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
from grpc_health.v1 import health_pb2

from tests.support.ports import free_port
from tests.support.rpc import health_check

BINARY = Path(sys.executable).parent / "tke-ipamd"


class IpamdProcess:
    """One tke-ipamd whose files (`<name>.toml`, `.sock`, `.log`) live in `workdir`.

    `extra` holds top-level TOML options; `tcp` ("127.0.0.1:PORT") adds a TCP listener, with TLS
    when `cert_file` and `key_file` are given (mutual TLS with `client_ca_file`), plaintext
    otherwise. `tcp_extra` is TOML for the [tcp] table (its `tenants`, its `[tcp.auth]`); without
    it the listener is `insecure` (no authentication: every caller is an administrator)."""

    def __init__(
        self,
        workdir: Path,
        name: str = "ipamd",
        *,
        endpoints: list[str],
        prefix: str,
        cooldown: float = 5.0,
        extra: str = "",
        log_level: str = "warning",
        tcp: str = "",
        cert_file: str = "",
        key_file: str = "",
        client_ca_file: str = "",
        tcp_extra: str = "",
    ) -> None:
        self.workdir = workdir
        self.socket = str(workdir / f"{name}.sock")
        self.config = workdir / f"{name}.toml"
        self.log_path = workdir / f"{name}.log"
        listener = ""
        if tcp:
            listener = f'\n[tcp]\naddress = "{tcp}"\n'
            listener += f'cert_file = "{cert_file}"\nkey_file = "{key_file}"\n' if cert_file else ""
            listener += f'client_ca_file = "{client_ca_file}"\n' if client_ca_file else ""
            listener += tcp_extra if tcp_extra else "insecure = true\n"
        quoted = ", ".join(json.dumps(e) for e in endpoints)
        self.config.write_text(
            f'socket = "{self.socket}"\nrelease_cooldown = {cooldown}\nshutdown_grace = 1.0\n'
            f'log_level = "{log_level}"\n{extra}\n{listener}\n'
            f'[storage]\nplugin = "etcd"\n[storage.options]\nendpoints = [{quoted}]\nprefix = "{prefix}"\n'
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def start(self, timeout: float = 30.0) -> None:
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
                resp = health_check(channel)(health_pb2.HealthCheckRequest(), timeout=1)
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

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


class IpamdDaemon(IpamdProcess):
    """`with IpamdDaemon(endpoints, prefix) as ipamd:` an IpamdProcess in a directory of its own
    under /tmp, removed when it stops."""

    def __init__(self, endpoints: list[str], prefix: str) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="ipamd-", dir="/tmp")), endpoints=endpoints, prefix=prefix)

    def __enter__(self) -> IpamdDaemon:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def refused_at_start(workdir: Path, toml: str) -> str:
    """tke-ipamd's stderr for a configuration (`toml`, with an etcd storage added) it must refuse
    at start, with exit status 1 or 2 and no traceback. etcd is never reached: the configuration
    is refused before anything is served."""
    config = workdir / "bad.toml"
    config.write_text(
        toml + f'\n[storage]\nplugin = "etcd"\n[storage.options]\nendpoints = ["127.0.0.1:{free_port()}"]\n'
    )
    proc = subprocess.run(
        [str(BINARY), "--config", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc
    return proc.stderr
