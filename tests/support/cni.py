"""Test support for the CNI plugins. A minimal CNI runtime: runs a plugin binary exactly as libcni does (CNI_* in the
environment, the configuration on stdin, the result or error JSON on stdout), inside a "node"
network namespace the test created, so bridges, veths and addresses never touch the host.

Also namespace, link and address helpers and configuration builders; every name is unique
per test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ipamd_daemon import IpamdProcess

DEBIAN_CNI = "/usr/lib/cni"


def console_script(name: str) -> str:
    """The installed console script `name` (next to the running interpreter)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeError(f"{name} is not installed: run `.venv/bin/pip install -e '.[dev]'`")
    return str(path)


def unique(prefix: str) -> str:
    """A short unique name (link names must stay <= 15 characters)."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def netns_path(name: str) -> str:
    return f"/var/run/netns/{name}"


@contextmanager
def netns(prefix: str = "tkc") -> Iterator[str]:
    """A named network namespace with loopback up, deleted afterwards whatever happens."""
    name = unique(prefix)
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def addresses(ns: str, ifname: str) -> list[str]:
    """IPv4 addresses (CIDR) on `ifname` inside `ns`; [] when the link does not exist."""
    out = sh("ip", "-n", ns, "-j", "addr", "show", "dev", ifname, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    return [
        f"{a['local']}/{a['prefixlen']}"
        for link in json.loads(out.stdout)
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    ]


def links(ns: str) -> list[dict[str, Any]]:
    out = sh("ip", "-n", ns, "-j", "-d", "link", "show", check=False)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []


def link_names(ns: str) -> set[str]:
    return {link["ifname"] for link in links(ns)}


def reachable(source_ns: str, target_ns: str, address: str, port: int = 7777) -> bool:
    """True when a TCP connection from `source_ns` reaches a listener on `address` inside
    `target_ns` (Python sockets on both ends: no ping binary needed)."""
    server_code = (
        "import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        f"s.bind(({address!r},{port}));s.listen(1);print('ready',flush=True);s.settimeout(10);"
        "c,_=s.accept();c.sendall(b'pong');c.close()"
    )
    client_code = f"import socket;c=socket.create_connection(({address!r},{port}),timeout=5);print(c.recv(4).decode())"
    server = subprocess.Popen(
        ["ip", "netns", "exec", target_ns, sys.executable, "-c", server_code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            return False
        out = sh("ip", "netns", "exec", source_ns, sys.executable, "-c", client_code, check=False)
        return out.stdout.strip() == "pong"
    finally:
        server.kill()
        server.wait()


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    def ok(self) -> Any:
        assert self.code == 0, f"plugin failed ({self.code}): {self.stdout}\n{self.stderr}"
        return self.json


@dataclass
class Runtime:
    """Runs one plugin binary in the node namespace `node` (empty: the caller's own) with
    CNI_PATH `path`."""

    binary: str
    node: str
    path: list[str]
    extra_env: dict[str, str] = field(default_factory=dict)

    def run(
        self,
        command: str,
        config: Mapping[str, Any] | bytes | str | None,
        *,
        container_id: str = "",
        netns: str = "",
        ifname: str = "eth0",
        args: str = "",
        drop: tuple[str, ...] = (),
        timeout: float = 60,
    ) -> Outcome:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update(self.extra_env)
        env.update(
            {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": container_id,
                "CNI_NETNS": netns,
                "CNI_IFNAME": ifname,
                "CNI_ARGS": args,
                "CNI_PATH": os.pathsep.join(self.path),
            }
        )
        for key in drop:
            env.pop(key, None)
        if isinstance(config, Mapping):
            stdin = json.dumps(config).encode()
        elif isinstance(config, str):
            stdin = config.encode()
        else:
            stdin = config or b""
        argv = ["ip", "netns", "exec", self.node, self.binary] if self.node else [self.binary]
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        out = Outcome(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr
        return out


def with_prev(config: Mapping[str, Any], result: Any) -> dict[str, Any]:
    return {**config, "prevResult": result}


def bin_dir(tmp: Path, *names: str) -> str:
    """A CNI bin directory with links to our console scripts `names`."""
    folder = tmp / "cni-bin"
    folder.mkdir(exist_ok=True)
    for name in names:
        target = console_script(name)
        link = folder / name
        if not link.exists():
            link.symlink_to(target)
    return str(folder)


MODULES = {"cni-switch": "tke.cmd.cni_switch", "tke-ipamc": "tke.cmd.ipamc"}


def launchers(folder: Path, python: str = "") -> str:
    """A CNI bin directory with the launchers deploy/cni/install-node.sh writes
    (tke.internal.cni.launcher: `#!python -IS`, the package's paths, import, main()), for
    `python` (default: this interpreter), written by that interpreter as the script does."""
    folder.mkdir(parents=True, exist_ok=True)
    python = python or sys.executable
    for name, module in MODULES.items():
        path = folder / name
        text = subprocess.run(
            [python, "-I", "-m", "tke.internal.cni.launcher", module, python], capture_output=True, check=True
        ).stdout
        path.write_bytes(text)
        path.chmod(0o755)
    return str(folder)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def bridge_network(
    tmp_path: Path, subnet: str, *, name: str | None = None, version: str | None = "1.0.0", **bridge: Any
) -> dict[str, Any]:
    """A bridge + host-local conflist with a unique bridge and a lease directory of the test."""
    plugin: dict[str, Any] = {
        "type": "bridge",
        "bridge": unique("tb"),
        "ipam": {"type": "host-local", "dataDir": str(tmp_path / "leases"), "ranges": [[{"subnet": subnet}]]},
        **bridge,
    }
    out: dict[str, Any] = {"name": name or unique("net-"), "plugins": [plugin]}
    if version:
        out["cniVersion"] = version
    return out


def switch_config(tmp_path: Path, networks: dict[str, Any], default: str, **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": "tke",
        "type": "cni-switch",
        "stateDir": str(tmp_path / "state"),
        "defaultNetwork": default,
        "networks": networks,
        **extra,
    }


def record_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "tke" / "attachments"


def leases(tmp_path: Path, network: str) -> set[str]:
    """host-local's reserved addresses of `network` (its files named by address)."""
    folder = tmp_path / "leases" / network
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if p.name[0].isdigit() and not p.name.startswith("last_reserved")}


class IpamdDaemon(IpamdProcess):
    """A real tke-ipamd for the CNI tests, without release cooldown unless asked (the tests
    hand addresses out again at once)."""

    def __init__(self, workdir: Path, *, cooldown: float = 0.0, **options: Any) -> None:
        super().__init__(workdir, cooldown=cooldown, **options)


@contextmanager
def running_ipamd(endpoints: list[str], prefix: str, extra: str = "") -> Iterator[IpamdDaemon]:
    """A started IpamdDaemon in a fresh directory under /tmp (its unix socket's path must stay
    short), stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="cni-ipamd-", dir="/tmp"))
    daemon = IpamdDaemon(workdir, endpoints=endpoints, prefix=prefix, extra=extra)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def ipamc_network(name: str, bridge_name: str, socket: str, tmp_path: Path, **ipam: Any) -> dict[str, Any]:
    """A bridge + tke-ipamc conflist (the fixed-IP network)."""
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge_name,
                "ipam": {
                    "type": "tke-ipamc",
                    "ipamd": {"address": socket, "timeout": 10},
                    "node": "node-1",
                    "stateDir": str(tmp_path / "ipamc"),
                    "releaseRetrySeconds": 0.5,
                    **ipam,
                },
            }
        ],
    }
