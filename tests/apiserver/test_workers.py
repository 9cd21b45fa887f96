"""`tke-apiserver --workers N`: several processes serve one TCP port (SO_REUSEPORT), each with
its own metrics port; the unix socket is worker 0's; SIGTERM stops them all; a worker that dies
takes the server down with a message that names it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from tests.apiserver.test_binary import BINARY, run
from tests.support.apiserver import cluster
from tests.support.etcd import EtcdProcess
from tests.support.ports import free_port, free_ports
from tests.support.rpc import health_check
from tests.support.waiting import wait_for
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _creates(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    pattern = r'tke_grpc_server_handled_total\{code="OK",method="Create",service="[^"]*ClusterService"\} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def _config(tmp_path: Path, etcd: EtcdProcess, port: int, metrics: int, extra: str = "") -> Path:
    config = tmp_path / "apiserver.toml"
    config.write_text(
        f'metrics_address = "127.0.0.1:{metrics}"\n{extra}[listen]\naddress = "127.0.0.1:{port}"\n'
        f'unix_socket = "{tmp_path / "run" / "api.sock"}"\n'
        f'[etcd]\nendpoints = ["{etcd.endpoint}"]\nprefix = "/workers-{port}"\n'
    )
    return config


async def _started(port: int, workers: int, proc: asyncio.subprocess.Process) -> list[int]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await health_check(channel)(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)

    def all_there() -> list[int] | None:
        found = _children(proc.pid)
        return found if len(found) == workers else None

    return await wait_for(all_there, what="the workers")


async def test_workers_share_the_port_and_all_stop_on_sigterm(etcd: EtcdProcess, tmp_path: Path) -> None:
    port, metrics = free_port(), free_ports(2)
    config = _config(tmp_path, etcd, port, metrics)
    proc = await asyncio.create_subprocess_exec(
        BINARY, "--config", str(config), "--workers", "2", stderr=asyncio.subprocess.PIPE
    )
    try:
        workers = await _started(port, 2, proc)
        names = iter(range(10_000))

        async def both_served() -> bool:
            # Each channel is a new connection, which the kernel hands to either worker.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = cluster_pb2_grpc.ClusterServiceStub(channel)
                await stub.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(f"w{next(names)}")), timeout=20)
            counts = await asyncio.gather(*(asyncio.to_thread(_creates, metrics + i) for i in range(2)))
            return all(c > 0 for c in counts)

        await wait_for(both_served, within=60, what="calls served by both workers")
        # The unix socket answers (worker 0's).
        async with grpc.aio.insecure_channel(f"unix:{tmp_path / 'run' / 'api.sock'}") as channel:
            resp = await health_check(channel)(health_pb2.HealthCheckRequest(), timeout=20)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert not [w for w in workers if _alive(w)]
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert log.count("shutting down") == 2, log
        assert "tke-apiserver worker 1 serving on tcp" in log
        assert "Traceback" not in log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_dying_worker_stops_the_server_and_is_named(etcd: EtcdProcess, tmp_path: Path) -> None:
    port, metrics = free_port(), free_ports(2)
    config = _config(tmp_path, etcd, port, metrics, extra="workers = 2\n")
    proc = await asyncio.create_subprocess_exec(BINARY, "--config", str(config), stderr=asyncio.subprocess.PIPE)
    try:
        workers = await _started(port, 2, proc)
        os.kill(workers[1], signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 30) == 1
        assert not [w for w in workers if _alive(w)]
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert re.search(r"worker \d \(pid \d+\) was killed by signal SIGKILL: stopping the others", log), log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    config = tmp_path / "apiserver.toml"
    config.write_text('metrics_address = ""\n[listen]\naddress = "127.0.0.1:0"\n')
    code, err = await run("--config", str(config), "--workers", "2")
    assert code == 2 and "workers > 1 share one TCP port" in err
    code, err = await run("--config", str(config), "--workers", "0")
    assert code == 2 and "workers must be 1 or more" in err
