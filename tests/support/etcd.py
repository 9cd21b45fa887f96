"""A real etcd server for tests, benchmarks and `make run`: started on free loopback ports with
its data in a directory of the caller's, and stopped, killed, paused or restarted on demand.

It runs Debian's etcd (3.4, /usr/bin/etcd) or the binary named by $TKE_ETCD_BIN.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.ports import free_port


def etcd_binary() -> str:
    path = os.environ.get("TKE_ETCD_BIN") or shutil.which("etcd") or "/usr/bin/etcd"
    if not os.path.exists(path):
        raise RuntimeError("etcd not found: run `make setup` (installs Debian's etcd-server) or set TKE_ETCD_BIN")
    return path


class EtcdProcess:
    """One etcd member on 127.0.0.1. `client_port`/`peer_port` 0 pick free ports."""

    def __init__(
        self,
        data_dir: Path,
        *,
        client_port: int = 0,
        peer_port: int = 0,
        name: str = "tke-etcd",
        tls: tuple[str, str, str] | None = None,
        host: str = "127.0.0.1",
        uid: int | None = None,
    ) -> None:
        """`tls` = (ca_file, cert_file, key_file): serve clients over TLS and require client
        certificates signed by that CA."""
        self.data_dir = data_dir
        self.tls = tls
        self.host = host
        # Run as this user (root only): iptables' owner match then tells its packets apart.
        self.uid = uid
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        # Overrides of the single-member flags (EtcdCluster sets the cluster's members here).
        self.extra_args: list[str] = []
        self._paused = False

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def start(self, timeout: float = 20.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to be healthy (members of a new cluster
        only become healthy together)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        peer = f"http://{self.host}:{self.peer_port}"
        client = f"{self.scheme}://{self.host}:{self.client_port}"
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
            # Fast elections: tests kill and pause members.
            "--heartbeat-interval=100",
            "--election-timeout=1000",
            "--logger=zap",
            "--log-outputs=stderr",
            # Before 3.4.25 the store's watches rely on etcd's timed progress notifications
            # (internal/storage/etcd/store.py): as often as the tests' apiservers ask for theirs.
            "--experimental-watch-progress-notify-interval=200ms",
            # Tests and development value speed over durability of the last write.
            "--unsafe-no-fsync" if _supports_unsafe_no_fsync() else "--snapshot-count=100000",
        ]
        if self.tls is not None:
            ca, cert, key = self.tls
            args += [f"--trusted-ca-file={ca}", f"--cert-file={cert}", f"--key-file={key}", "--client-cert-auth"]
        # Later flags win: a cluster's --initial-cluster replaces the single-member one.
        args += self.extra_args
        if self.uid is not None:
            args = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", *args]
            for path in (self.data_dir, *self.data_dir.rglob("*")):
                os.chown(path, self.uid, self.uid)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        self.process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.scheme}://{self.host}:{self.client_port}/health"
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=self.tls[0])
            context.load_cert_chain(self.tls[1], self.tls[2])
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                    if b'"true"' in resp.read() and self._answering_is_ours(context):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd did not become healthy within {timeout}s; see {self.log_path}")

    def _answering_is_ours(self, context: ssl.SSLContext | None) -> bool:
        """Whether the member answering on our client port is this process: a port taken between
        choosing it and etcd's bind (another test run's etcd on this machine) made the fixture
        take the other etcd for its own, and pausing ours then paused nothing that answered.
        Our member is the one with our peer URL; an etcd that failed to bind exits soon after."""
        request = urllib.request.Request(
            f"{self.scheme}://{self.host}:{self.client_port}/v3/cluster/member/list", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=1, context=context) as resp:
            answer = json.loads(resp.read())
        peer = f"http://{self.host}:{self.peer_port}"
        answering = answer.get("header", {}).get("member_id")
        if any(m.get("ID") == answering and peer in m.get("peerURLs", []) for m in answer.get("members", [])):
            return True
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        raise RuntimeError(f"another etcd answers on {self.host}:{self.client_port}; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume_if_paused()
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
        self._paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self._paused = False

    def resume_if_paused(self) -> None:
        if self._paused and self.process is not None and self.process.poll() is None:
            self.resume()

    def restart(self) -> None:
        self.stop()
        self.start()


def metric(client_url: str, name: str) -> float | None:
    """The value of one of etcd's Prometheus metrics (no labels), from its client URL."""
    with urllib.request.urlopen(f"{client_url}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


_no_fsync: bool | None = None


def _supports_unsafe_no_fsync() -> bool:
    global _no_fsync  # noqa: PLW0603 - probed once per process
    if _no_fsync is None:
        out = subprocess.run([etcd_binary(), "--help"], capture_output=True, text=True, check=False)
        _no_fsync = "--unsafe-no-fsync" in (out.stdout + out.stderr)
    return _no_fsync


class EtcdCluster:
    """A multi-member etcd cluster on loopback, one data directory per member under `root`.
    With `distinct_hosts`, member i listens on 127.0.0.(i+2), so that a test can cut one
    member off the others with iptables rules on addresses."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        token: str = "tke-test",
        distinct_hosts: bool = False,
        extra_args: list[str] | None = None,
    ) -> None:
        """`extra_args`: more flags for every member (after the cluster's own)."""
        self.members = [
            EtcdProcess(root / f"member{i}", name=f"m{i}", host=f"127.0.0.{i + 2}" if distinct_hosts else "127.0.0.1")
            for i in range(size)
        ]
        self.token = token
        self.extra_args = list(extra_args or [])

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://{m.host}:{m.peer_port}" for m in self.members)

    def start(self, timeout: float = 30.0) -> None:
        for m in self.members:
            m.extra_args = [
                f"--initial-cluster={self._initial_cluster()}",
                f"--initial-cluster-token={self.token}",
                *self.extra_args,
            ]
            m.launch()
        for m in self.members:
            m.wait_ready(timeout)

    def stop(self) -> None:
        for m in self.members:
            m.resume_if_paused()
            m.stop()
