"""Processes of a bench run: the machine's description, a real tke-apiserver process with the
bench's configuration, and what /proc says about a process (RSS, CPU time).

Every process started here is registered with a `Processes` stack that stops it, also when the
run fails half-way."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.controller import toml
from tests.support.etcd import etcd_binary
from tests.support.ports import free_port, free_ports

ADMIN_TOKEN = "bench-admin-token"
USER_TOKEN = "bench-user-token"
TENANT = "bench"
PREFIX = "/bench"


def python() -> list[str]:
    return [sys.executable]


class Processes:
    """Children of the bench; `stop_all` ends each one (SIGTERM, then SIGKILL) in reverse order."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], log: Path | None = None, **kw: Any) -> subprocess.Popen[bytes]:
        out: Any = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child's
        try:
            child = subprocess.Popen(list(argv), stdout=kw.pop("stdout", out), stderr=out, **kw)
        finally:
            if log is not None:
                out.close()
        self._children.append(child)
        return child

    def stop(self, child: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self._children)):
            self.stop(child, timeout=5.0)


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and of its children so far (the workers of an apiserver
    started with --workers)."""
    total = cpu_seconds(pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += cpu_seconds(int(entry))
    return total


def machine() -> dict[str, Any]:
    """What the results came from."""
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    etcd = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True, check=False).stdout
    h2load = shutil.which("h2load")
    h2v = subprocess.run([h2load, "--version"], capture_output=True, text=True, check=False).stdout if h2load else ""
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "etcd": (re.search(r"etcd Version: (\S+)", etcd) or re.search(r"(\S+)", etcd or "?")).group(1),  # type: ignore[union-attr]
        "h2load": h2v.strip(),
        "loadavg_start": os.getloadavg(),
    }


def wait_port(port: int, child: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"process {child.args!r} exited with {child.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


@dataclass
class ApiserverProcess:
    """A real tke-apiserver process (`python -m tke.cmd.apiserver`), with or without the auth
    chain (token-file authn, policy authz, jsonl-file audit)."""

    work: Path
    name: str
    etcd_endpoint: str
    chain: bool = True
    audit: bool = True  # with the chain: the jsonl-file audit sink
    log_level: str = "info"  # the default: an access-log line per call
    workers: int = 1  # processes sharing the port (tke-apiserver --workers)
    watch_cache: bool = True  # the default: Get and List from memory
    port: int = 0
    metrics_port: int = 0
    child: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    def config(self) -> dict[str, Any]:
        self.port = self.port or free_port()
        # Worker I of --workers serves its metrics on this port + I.
        self.metrics_port = self.metrics_port or (free_ports(self.workers) if self.workers > 1 else free_port())
        tokens = self.work / "tokens.csv"
        if not tokens.exists():
            tokens.write_text(
                f"{ADMIN_TOKEN},bench-admin,u-admin,tke:platform-admins,{TENANT}\n"
                f"{USER_TOKEN},bench-user,u-user,,{TENANT}\n"
            )
        auth: dict[str, Any] = {}
        if self.chain:
            # The shape of [[auth.authenticators]] etc. as a dict of lists for the TOML writer.
            auth = {
                "authenticators": [{"plugin": "token-file", "options": {"path": str(tokens)}}],
                "authorizers": [{"plugin": "policy"}],
                "audit": [{"plugin": "jsonl-file", "options": {"path": str(self.work / f"{self.name}-audit.jsonl")}}],
            }
            if not self.audit:
                del auth["audit"]
        return {
            "log_level": self.log_level,
            "metrics_address": f"127.0.0.1:{self.metrics_port}",
            "listen": {"address": self.address},
            "etcd": {"endpoints": [self.etcd_endpoint], "prefix": PREFIX},
            # Figure 3 opens 1,000 watches as one administrator: the per-identity cap (100 by
            # default, against a tenant's runaway script) is not what it measures. Figure 1 keeps
            # 256 calls of one tenant's one user (bench-user) in flight: so do its shares (80 and 40
            # by default, so that one tenant or user cannot take the server), up to all tenants may
            # hold (400 - 40).
            "limits": {
                "max_watches_per_identity": 100_000,
                "max_requests_inflight_per_tenant": 360,
                "max_requests_inflight_per_user": 360,
            },
            # Figure 1 creates clusters as one tenant for as long as it runs: far more than a tenant's
            # quota (100 clusters, 64 MiB by default), which is checked on every create all the same.
            "quotas": {"clusters": 1 << 40, "bytes": 1 << 50},
            "auth": auth,
            **({"workers": self.workers} if self.workers > 1 else {}),
        } | ({} if self.watch_cache else {"watch_cache": False})

    def start(self, procs: Processes) -> None:
        path = self.work / f"{self.name}.toml"
        path.write_text(_toml_with_arrays(self.config()))
        self.child = procs.start(
            [*python(), "-m", "tke.cmd.apiserver", "--config", str(path)], log=self.work / f"{self.name}.log"
        )
        wait_port(self.port, self.child)
        wait_port(self.metrics_port, self.child)

    def handled(self, method: str) -> dict[str, float]:
        """tke_grpc_server_handled_total of `method` ("ClusterService/Get") by code."""
        service, rpc = method.split("/")
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        out: dict[str, float] = {}
        pattern = re.compile(r"^tke_grpc_server_handled_total\{([^}]*)\} (\S+)$", re.M)
        for labels, value in pattern.findall(text):
            fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if fields.get("service", "").endswith(service) and fields.get("method") == rpc:
                out[fields["code"]] = out.get(fields["code"], 0.0) + float(value)
        return out


def _toml_with_arrays(config: Mapping[str, Any]) -> str:
    """The test TOML writer, plus arrays of tables for [[auth.*]] plugin lists."""
    data = dict(config)
    auth = dict(data.pop("auth", {}))
    out = toml(data)
    if auth:
        out += "\n[auth]\n"
    for group in ("authenticators", "authorizers", "audit"):
        for plugin in auth.get(group, []):
            out += f'\n[[auth.{group}]]\nplugin = "{plugin["plugin"]}"\n'
            if plugin.get("options"):
                out += f"[auth.{group}.options]\n" + toml(plugin["options"])
    return out
