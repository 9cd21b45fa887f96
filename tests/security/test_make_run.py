"""Security model: `make run` (hack/run-local.sh) supervises what it starts. A component killed
is started again after a short backoff with a line saying so, instead of the platform being
torn down; its log is appended to, not truncated; the unix socket the dead one left is
replaced; every file and socket is created for the user only; etcd runs with a quota; Ctrl-C
stops everything.

The script runs with deploy/dev's configurations moved onto free ports and into this test's
directory (through the environment it reads), so it runs beside anything else."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import stat
import tomllib
from pathlib import Path
from typing import Any

import grpc
import tomli_w
from grpc_health.v1 import health_pb2

from tests.support import REPO
from tests.support.etcd import etcd_binary, metric
from tests.support.ports import free_port
from tests.support.rpc import health_check
from tests.support.waiting import wait_for

STARTED = re.compile(r"make run: (\S+) started \(pid (\d+)")


def load(name: str) -> dict[str, Any]:
    with open(REPO / "deploy" / "dev" / name, "rb") as f:
        return tomllib.load(f)


def moved_profile(config: Path, run: Path, etcd_client: int) -> dict[str, str]:
    """deploy/dev's configurations with every port free and every path in `run`."""
    config.mkdir()
    etcd = [f"127.0.0.1:{etcd_client}"]
    api = load("apiserver.toml")
    api["listen"]["address"] = f"127.0.0.1:{free_port()}"
    api["listen"]["unix_socket"] = str(run / "apiserver.sock")
    api["metrics_address"] = f"127.0.0.1:{free_port()}"
    api["etcd"]["endpoints"] = etcd
    api["auth"]["authenticators"][0]["options"]["path"] = str(REPO / "deploy/dev/tokens.csv")
    api["auth"]["audit"][0]["options"]["path"] = str(run / "audit.jsonl")
    ipamd = load("ipamd.toml")
    ipamd["socket"] = str(run / "ipamd.sock")
    ipamd["metrics_address"] = ""
    ipamd["storage"]["options"]["endpoints"] = etcd
    ctl = load("controller.toml")
    ctl["metrics_address"] = ""
    ctl["apiserver"]["address"] = api["listen"]["address"]
    ctl["etcd"]["endpoints"] = etcd
    for name, table in (("apiserver", api), ("ipamd", ipamd), ("controller", ctl)):
        (config / f"{name}.toml").write_text(tomli_w.dumps(table))
    return {
        "api": api["listen"]["address"],
        "api_socket": str(run / "apiserver.sock"),
        "ipamd": str(run / "ipamd.sock"),
    }


class Output:
    """The script's output lines, read as they come."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream
        self.lines: list[str] = []
        self.pids: dict[str, list[int]] = {}

    async def until(self, wanted: str, within: float = 120) -> re.Match[str]:
        pattern = re.compile(wanted)
        async with asyncio.timeout(within):
            while True:
                raw = await self.stream.readline()
                assert raw, f"the script ended; it said: {self.lines}"
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if m := STARTED.search(line):
                    self.pids.setdefault(m.group(1), []).append(int(m.group(2)))
                if m := pattern.search(line):
                    return m


async def serving(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            resp = await health_check(channel)(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    return False


def private(path: Path) -> bool:
    """0600 or 0640 (sockets and files), 0700 or 0750 (directories): nothing for others."""
    return stat.S_IMODE(path.stat().st_mode) & 0o027 == 0


async def test_make_run_restarts_what_dies_and_keeps_everything_private(tmp_path: Path) -> None:
    etcd_binary()
    run, config = tmp_path / "run", tmp_path / "config"
    etcd_ports = [free_port(), free_port()]
    where = moved_profile(config, run, etcd_ports[0])
    env = {
        **os.environ,
        "TKE_RUN_DIR": str(run),
        "TKE_RUN_CONFIG": str(config),
        "TKE_RUN_ETCD_PORTS": " ".join(map(str, etcd_ports)),
    }
    proc = await asyncio.create_subprocess_exec(
        str(REPO / "hack/run-local.sh"),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    out = Output(proc.stdout)
    try:
        await out.until("The platform is running")
        assert set(out.pids) == {"etcd", "apiserver", "ipamd", "controller"}, out.lines
        assert await serving(where["api"]) and await serving(f"unix:{where['ipamd']}")
        assert metric(f"http://127.0.0.1:{etcd_ports[0]}", "etcd_server_quota_backend_bytes") == 2 * 1024**3

        # Everything it and the servers created is the user's alone.
        await wait_for((run / "audit.jsonl").exists, what="the audit log")
        made = [run, *run.iterdir()]
        assert {p.name for p in made} >= {"apiserver.log", "ipamd.sock", "apiserver.sock", "audit.jsonl", "etcd"}
        assert [p.name for p in made if not private(p)] == []

        # A component killed is started again, with a line saying so; its socket is replaced.
        for name, target in (("ipamd", f"unix:{where['ipamd']}"), ("apiserver", f"unix:{where['api_socket']}")):
            dead = out.pids[name][-1]
            os.kill(dead, signal.SIGKILL)
            line = await out.until(f"make run: {name} exited .*restarting it in")
            assert "status 137" in line.string, line.string
            await out.until(f"make run: {name} started")
            assert out.pids[name][-1] != dead
            await wait_for(lambda t=target: serving(t), within=60, what=f"the restarted {name} serving")  # type: ignore[misc]
        assert await serving(where["api"])
        assert alive(out.pids["etcd"][0]) and alive(out.pids["controller"][0])
        # Logs are appended to: both lives of ipamd are in its log.
        assert (run / "ipamd.log").read_text().count("tke-ipamd serving on") == 2
        assert private(run / "ipamd.sock") and private(run / "apiserver.sock")

        # Ctrl-C (to the script's process group, as a terminal sends it) stops everything.
        os.killpg(proc.pid, signal.SIGINT)
        async with asyncio.timeout(60):
            code = await proc.wait()
        assert code == 0
        every = [pid for pids in out.pids.values() for pid in pids]
        await wait_for(lambda: not [p for p in every if alive(p)], what="everything make run started exiting")
    finally:
        for pid in (p for pids in out.pids.values() for p in pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()
