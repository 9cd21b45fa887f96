"""Security model: the apiserver's memory is bounded in bytes, not only in counts.

50 watchers that stop reading (their client process SIGSTOPped) while 100 KB objects change
hundreds of times: a real tke-apiserver process must grow by less than MEMORY_BOUND (the
watch window's byte limit, one queue allowance of changes shared by the watchers of a tenant,
one message per stream in grpc's hands, and the decoded copies of those; the README's
"Security model" states it), end every stalled watcher with RESOURCE_EXHAUSTED and the
revision to resume from, and keep serving. A unit test checks that the window evicts by bytes.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support import REPO
from tests.support.apiserver import cluster
from tests.support.etcd import EtcdProcess
from tests.support.memory_store import MemoryStore
from tests.support.ports import free_port
from tests.support.waiting import Lines, wait_for
from tke.internal.apiserver.kinds import CLUSTERS
from tke.internal.apiserver.registry import Registry
from tke.internal.apiserver.watch import Hub
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

MiB = 1024 * 1024
WATCHERS = 50
OBJECTS = 20
# x (100 KB new + 100 KB previous state) = 100 MB of changes through the hub: past the window's
# and a queue's byte limits (measured: the growth is the same with 2,400).
UPDATES = 500
OBJECT_BYTES = 100 * 1000
# What the apiserver may grow by with the default limits (watch.window_bytes 64 MiB,
# watch.client_queue_bytes 16 MiB): see the README's "Security model".
MEMORY_BOUND = 256 * MiB


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def metric(address: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def start_watchers(address: str, resource_version: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.stalled_watchers", address, str(WATCHERS), resource_version],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def apiserver(etcd: EtcdProcess, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    address, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = tmp_path / "apiserver.toml"
    config.write_text(
        f'log_level = "warning"\nmetrics_address = "{metrics}"\n[listen]\naddress = "{address}"\n'
        "[watch]\nbookmark_interval = 0.5\n"
        f'[etcd]\nendpoints = ["{etcd.endpoint}"]\nprefix = "/memory"\n'
    )
    with open(tmp_path / "apiserver.log", "wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "tke-apiserver"), "--config", str(config)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        yield process, address, metrics
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_fifty_stalled_watchers_of_big_changing_objects_cost_a_bounded_amount(
    apiserver: tuple[subprocess.Popen[bytes], str, str],
) -> None:
    process, address, metrics = apiserver
    channel = grpc.aio.insecure_channel(address)
    stub = cluster_pb2_grpc.ClusterServiceStub(channel)
    watchers: subprocess.Popen[str] | None = None
    try:
        objects = []
        for i in range(OBJECTS):
            c = cluster(f"big-{i}")
            c.metadata.annotations["payload"] = "0" * OBJECT_BYTES
            objects.append(
                await stub.Create(cluster_pb2.CreateClusterRequest(cluster=c), wait_for_ready=True, timeout=60)
            )
        # Watching from now: no initial state, so that the memory measured is what changes cost.
        now = (await stub.List(cluster_pb2.ListClustersRequest(page_size=1))).metadata.resource_version
        watchers = start_watchers(address, now)
        assert watchers.stdout is not None
        lines = Lines(watchers.stdout)
        await asyncio.to_thread(lines.next, 120, lambda line: line == "ready")
        await wait_for(lambda: metric(metrics, 'tke_watch_clients{kind="clusters"}') == WATCHERS)
        watchers.send_signal(signal.SIGSTOP)  # they stop reading, all at once
        stopped = time.monotonic()
        before = proc_status(process.pid, "VmRSS")

        async def change(mine: list[cluster_pb2.Cluster], rounds: int) -> None:
            for r in range(rounds):
                c = mine[r % len(mine)]
                c.metadata.annotations["payload"] = f"{r:07d}" * (OBJECT_BYTES // 7)
                c.CopyFrom(await stub.Update(cluster_pb2.UpdateClusterRequest(cluster=c), timeout=60))

        writers = 4
        await asyncio.gather(*(change(objects[w::writers], UPDATES // writers) for w in range(writers)))
        await wait_for(
            lambda: metric(metrics, 'tke_watch_clients_too_slow_total{kind="clusters"}') >= WATCHERS,
            what="every stalled watcher ended",
        )
        peak = proc_status(process.pid, "VmHWM")
        after = proc_status(process.pid, "VmRSS")
        window = metric(metrics, 'tke_watch_window_bytes{kind="clusters"}')
        print(
            f"apiserver RSS before {before / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, after {after / MiB:.0f} MiB; "
            f"growth {(peak - before) / MiB:.0f} MiB (bound {MEMORY_BOUND / MiB:.0f} MiB); "
            f"window {window / MiB:.0f} MiB"
        )
        assert peak - before < MEMORY_BOUND
        assert window <= 64 * MiB

        watchers.send_signal(signal.SIGCONT)
        # A client stopped for longer than the server's keepalive (30 s, then 10 s for the
        # answer) has its connection closed before it reads its error: a slow machine's case.
        keepalive_closed = time.monotonic() - stopped > 30
        report = await asyncio.to_thread(lines.next, 120, lambda line: line.startswith("["))
        ends = json.loads(report)
        assert len(ends) == WATCHERS
        for end in ends:
            if keepalive_closed and end["code"] == "UNAVAILABLE":
                continue
            assert end["code"] == "RESOURCE_EXHAUSTED", end
            assert re.search(r"watch again from resource_version \d+", end["details"]), end
        # And the server goes on.
        listed = await stub.List(cluster_pb2.ListClustersRequest(page_size=1), timeout=30)
        assert len(listed.items) == 1
    finally:
        if watchers is not None:
            watchers.send_signal(signal.SIGCONT)
            watchers.kill()
            watchers.wait()
        await channel.close()


async def test_the_watch_window_is_bounded_in_bytes() -> None:
    store = MemoryStore()
    registry = Registry(CLUSTERS, store, "/w")
    hub = Hub(store, registry.root, registry.decode, window=10_000, window_bytes=1 * MiB)
    await hub.start()
    try:
        c = cluster("one")
        c.metadata.annotations["payload"] = "x" * OBJECT_BYTES
        created = await registry.create("t", c)
        for i in range(30):
            created.metadata.annotations["payload"] = f"{i:02d}" * (OBJECT_BYTES // 2)
            created = await registry.update("t", created, cluster_pb2.UpdateClusterRequest().update_mask)
        last = int(created.metadata.resource_version)
        await wait_for(lambda: hub.revision >= last)
        # Each change holds ~200 KB (new and previous state): 1 MiB keeps about five, not 31.
        assert 3 <= len(hub._window) <= 6, len(hub._window)
        assert hub._window_size <= 1 * MiB
        assert not hub.covers(int(created.metadata.resource_version) - 10)
    finally:
        await hub.stop()
