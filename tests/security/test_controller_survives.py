"""Security model: tke-controller never exits on an etcd stall, a defragmentation or a lost
lease. A real controller process over a real apiserver and etcd: etcd is stopped (SIGSTOP)
for longer than the lease, so the controller loses its leadership; once etcd runs again the
same process (same pid) leads again and reconciles new clusters. A defragmentation under it
changes nothing either, and its log never holds a traceback."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.controller import ControllerProcess, read_records
from tests.support.etcd import EtcdProcess
from tests.support.tools import tool
from tests.support.waiting import wait_for
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.store import NotFound
from tke.platform.v1 import cluster_pb2

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
TTL = 3
PREFIX = "/survive"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(etcd: EtcdProcess) -> AsyncIterator[Running]:
    running = await start(local_config(EtcdConfig(endpoints=[etcd.endpoint], prefix=PREFIX)))
    try:
        yield running
    finally:
        await stop(running)


@pytest.fixture
def controller(api: Running, etcd: EtcdProcess, tmp_path: Path) -> Iterator[ControllerProcess]:
    config: dict[str, Any] = {
        "workers": 2,
        "resync": 30.0,
        "health_interval": 5.0,
        "retry_base_delay": 0.2,
        "metrics_address": "",
        "apiserver": {"address": api.address, "token_env": ""},
        "etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX, "request_timeout": 2.0, "retry_budget": 4.0},
        "leader": {"ttl": TTL, "identity": "survivor"},
        "cluster_providers": {
            "recording": {
                "plugin": "tests.support.controller:RecordingProvider",
                "options": {"log_file": str(tmp_path / "steps.jsonl"), "steps": 2},
            }
        },
    }
    process = ControllerProcess(tmp_path, "survivor", config)
    process.start()
    try:
        yield process
    finally:
        process.kill()


def log_count(process: ControllerProcess, text: str) -> int:
    return process.log().count(text)


async def reconciled(api: Running, name: str, steps: Path, pid: int) -> None:
    """Create cluster `name` and wait until the controller `pid` ran its steps to Running."""
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(name, type="recording")))

    async def running() -> bool:
        got = await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name), timeout=10)
        return got.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING

    await wait_for(running, within=60, interval=0.2, what=f"cluster {name} Running")
    ran = {r["pid"] for r in read_records(steps) if r["cluster"] == name}
    assert ran == {pid}, ran


async def test_the_controller_rides_out_an_etcd_stall_longer_than_its_lease_and_a_defrag(
    api: Running, etcd: EtcdProcess, controller: ControllerProcess, tmp_path: Path
) -> None:
    steps = tmp_path / "steps.jsonl"
    store = EtcdStore(EtcdConfig(endpoints=[etcd.endpoint], prefix=PREFIX))
    try:

        async def holder() -> str | None:
            try:
                return (await store.get(f"{PREFIX}/leader/tke-controller")).value.decode()
            except NotFound:
                return None

        assert await wait_for(holder, within=60) == "survivor"
        pid = controller.pid
        await reconciled(api, "before", steps, pid)

        # etcd stops answering for longer than the lease: the controller stops leading.
        etcd.pause()
        paused_at = time.monotonic()
        try:
            await wait_for(lambda: log_count(controller, "lost leadership"), within=60, what="leadership lost")
            # Twice the lease, so that it has run out on etcd's side too (SIGSTOP: its clock goes on).
            await asyncio.sleep(max(0.0, paused_at + 2 * TTL - time.monotonic()))
            assert controller.alive()
        finally:
            etcd.resume()
        await wait_for(
            lambda: log_count(controller, "is the leader") >= 2, within=90, what="leadership taken back by the process"
        )
        assert controller.alive() and controller.pid == pid
        assert await holder() == "survivor"
        await reconciled(api, "after-stall", steps, pid)

        # A defragmentation (the member blocks while it rewrites its file) under a leader.
        defrag = await asyncio.create_subprocess_exec(
            tool("etcdctl", "etcd-client"),
            f"--endpoints={etcd.endpoint}",
            "defrag",
            env={**os.environ, "ETCDCTL_API": "3"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        said, _ = await asyncio.wait_for(defrag.communicate(), 60)
        assert defrag.returncode == 0, said
        await reconciled(api, "after-defrag", steps, pid)
        assert controller.alive() and controller.pid == pid
    finally:
        await store.close()
    assert "Traceback" not in controller.log()
