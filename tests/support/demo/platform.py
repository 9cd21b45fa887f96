"""The platform for the demo, as `make run` starts it but on ports of its own: etcd,
tke-apiserver and tke-controller as processes on free loopback ports (so the demo runs beside
`make run` and the test suite), with their configuration, data and logs in the demo's
directory, tokens made for this run, and a tkectl configuration with a context for them.

The controller installs with the baremetal providers over SSH (the demo's key, a credential of
the tenant "default", and its known_hosts), its files under the machines' root directories,
and reaches the clusters' API with its built-in Kubernetes client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tests.support import LOOPBACK_NETWORKS, REPO
from tests.support.controller import credentials_published, toml
from tests.support.demo.machines import Machines
from tests.support.etcd import EtcdProcess
from tests.support.ports import free_port
from tke.internal.storage.etcd import EtcdConfig
from tke.internal.tkectl import config as configfile
from tke.internal.tkectl.commands import configure

BIN = Path(sys.executable).parent
CREDENTIAL = "demo-key"
TENANT = "default"

APISERVER_TOML = """\
log_level = "info"
metrics_address = ""
shutdown_grace = 2.0

# The simulated machines and the clusters' API stand-ins are on loopback.
[machines]
allowed_networks = ["127.0.0.0/8", "::1/128"]

[listen]
address = "{address}"

[etcd]
endpoints = ["{etcd}"]
prefix = "/tke"

[[auth.authenticators]]
plugin = "token-file"
options = {{ path = "{tokens}" }}

[[auth.authorizers]]
plugin = "policy"

[[auth.audit]]
plugin = "jsonl-file"
options = {{ path = "{audit}" }}
"""


@dataclass
class Process:
    name: str
    child: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.child.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.child.terminate()
            try:
                self.child.wait(15)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()


def _start(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    with open(log, "ab") as out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=REPO, env=env, start_new_session=True
        )
    return Process(name, child, log)


def controller_config(api: str, etcd: str, machines: Machines) -> dict[str, Any]:
    options = {"root_dir": machines.root_dir, "command_timeout": 120.0}
    return {
        "log_level": "info",
        # Steps retry quickly: every machine is on this host, and an operator is watching.
        "retry_base_delay": 0.5,
        "retry_max_delay": 3.0,
        "health_interval": 10.0,
        "workers": 4,
        "apiserver": {"address": api, "token_env": "TKE_CONTROLLER_TOKEN"},
        "etcd": {"endpoints": [etcd], "prefix": "/tke"},
        "leader": {"ttl": 10},
        "ssh": {"known_hosts_file": str(machines.known_hosts), "connect_timeout": 10.0},
        # The simulated machines are sshd servers on loopback.
        "machines": {"allowed_networks": LOOPBACK_NETWORKS},
        "credentials": {f"{TENANT}/{CREDENTIAL}": {"private_key_file": str(machines.key.private_key_file)}},
        "cluster_providers": {"baremetal": {"options": options}},
        "machine_providers": {"baremetal": {"options": options}},
    }


@dataclass
class Platform:
    directory: Path
    api: str  # host:port of tke-apiserver
    admin_token: str
    processes: list[Process]

    @property
    def tkeconfig(self) -> Path:
        return self.directory / "tkeconfig"

    def tkectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TKECONFIG": str(self.tkeconfig)}
        return subprocess.run(
            [str(BIN / "tkectl"), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def channel(self) -> grpc.Channel:
        return grpc.intercept_channel(grpc.insecure_channel(self.api), _Bearer(self.admin_token))

    def check(self) -> None:
        """RuntimeError naming a platform process that exited."""
        for p in self.processes:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited with {p.child.returncode}; its log is {p.log}")


class _Bearer(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details = details._replace(metadata=[*(details.metadata or []), *self.metadata])
        return continuation(details, request)


def _wait_serving(process: Process, address: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    channel = grpc.insecure_channel(address)
    try:
        while True:
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return
            except grpc.FutureTimeoutError:
                pass
            if not process.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} did not start; the end of {process.log}:\n{_tail(process.log)}")
    finally:
        channel.close()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def platform(directory: Path, machines: Machines) -> Iterator[Platform]:
    """etcd, tke-apiserver and tke-controller, and tkectl's context; all stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    admin_token, controller_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    tokens = directory / "tokens.csv"
    tokens.write_text(
        f"{admin_token},demo-admin,u-demo-admin,tke:platform-admins,{TENANT}\n"
        f"{controller_token},tke-controller,u-controller,tke:platform-admins,{TENANT}\n"
    )
    tokens.chmod(0o600)
    etcd = EtcdProcess(directory / "etcd", name="tke-demo")
    processes: list[Process] = []
    try:
        etcd.start(timeout=60)
        api = f"127.0.0.1:{free_port()}"
        config = directory / "apiserver.toml"
        config.write_text(
            APISERVER_TOML.format(address=api, etcd=etcd.endpoint, tokens=tokens, audit=directory / "audit.jsonl")
        )
        apiserver = _start(
            "tke-apiserver",
            [sys.executable, "-m", "tke.cmd.apiserver", "--config", str(config)],
            directory / "apiserver.log",
        )
        processes.append(apiserver)
        _wait_serving(apiserver, api)
        config = directory / "controller.toml"
        config.write_text(toml(controller_config(api, etcd.endpoint, machines)))
        processes.append(
            _start(
                "tke-controller",
                [sys.executable, "-m", "tke.cmd.controller", "--config", str(config)],
                directory / "controller.log",
                env={**os.environ, "TKE_CONTROLLER_TOKEN": controller_token},
            )
        )
        # The apiserver takes objects naming the credential once the leading controller has
        # published it.
        try:
            asyncio.run(credentials_published(EtcdConfig([etcd.endpoint], "/tke"), f"{TENANT}/{CREDENTIAL}"))
        except AssertionError:
            raise RuntimeError(
                f"tke-controller did not publish its credentials; the end of its log:\n{_tail(processes[-1].log)}"
            ) from None
        running = Platform(directory, api, admin_token, processes)
        # What `tkectl config set-context demo --server ... --token ... --use` writes, without the
        # token on a command line.
        configure.set_context(configfile.load(running.tkeconfig), "demo", {"server": api, "token": admin_token}, True)
        yield running
    finally:
        for p in reversed(processes):
            p.stop()
        etcd.stop()
