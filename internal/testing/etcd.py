"""A real etcd server for tests, benchmarks and `make run`: started on free loopback ports with
its data in a directory of the caller's, and stopped, killed, paused or restarted on demand.

It runs Debian's etcd (3.4, /usr/bin/etcd) or the binary named by $TKE_ETCD_BIN.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def etcd_binary() -> str:
    path = os.environ.get("TKE_ETCD_BIN") or shutil.which("etcd") or "/usr/bin/etcd"
    if not os.path.exists(path):
        raise RuntimeError("etcd not found: run `make setup` (installs Debian's etcd-server) or set TKE_ETCD_BIN")
    return path


class EtcdProcess:
    """One etcd member on 127.0.0.1. `client_port`/`peer_port` 0 pick free ports."""

    def __init__(self, data_dir: Path, *, client_port: int = 0, peer_port: int = 0, name: str = "tke-etcd") -> None:
        self.data_dir = data_dir
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.client_port}"
        args = [
            etcd_binary(),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-outputs=stderr",
            # Tests and development value speed over durability of the last write.
            "--unsafe-no-fsync" if _supports_unsafe_no_fsync() else "--snapshot-count=100000",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        self.process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.client_port}/health"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if b'"true"' in resp.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd did not become healthy within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
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

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()


_no_fsync: bool | None = None


def _supports_unsafe_no_fsync() -> bool:
    global _no_fsync  # noqa: PLW0603 - probed once per process
    if _no_fsync is None:
        out = subprocess.run([etcd_binary(), "--help"], capture_output=True, text=True, check=False)
        _no_fsync = "--unsafe-no-fsync" in (out.stdout + out.stderr)
    return _no_fsync
