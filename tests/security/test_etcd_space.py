"""Security model: etcd never fills up unnoticed, and a full etcd is a clear answer.

- A real etcd started with a tiny quota is filled through the apiserver until its NOSPACE
  alarm: writes are RESOURCE_EXHAUSTED naming the cause (never INTERNAL), reads and watches
  keep working (ipamd's as well as the apiserver's), and the recovery the README gives
  (compact, defragment, disarm) brings writes back.
- The apiserver compacts etcd's history on its interval; several apiservers take turns
  through a compare-and-swap on compact_rev_key, so exactly one compacts per turn, and a
  compaction that finds etcd compacted further is harmless.
- The deploy profiles give etcd a quota and its own compaction: deploy/etcd/etcd.env read by a
  real etcd, and the apiserver's object limit below etcd's request limit.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support import REPO
from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.etcd import EtcdProcess, etcd_binary, metric
from tests.support.ipamd_daemon import IpamdDaemon
from tests.support.ports import free_port
from tests.support.rpc import detail_of, expect_error, next_message
from tests.support.tools import tool
from tests.support.waiting import wait_for, wait_until
from tke.internal.apiserver.app import LimitsConfig
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.etcd.compactor import COMPACT_KEY, Compactor
from tke.internal.storage.store import Compacted
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode
QUOTA = 4 * 1024 * 1024


@pytest.fixture
def small_etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path / "etcd")
    server.extra_args = [f"--quota-backend-bytes={QUOTA}"]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(small_etcd: EtcdProcess) -> AsyncIterator[Running]:
    running = await start(local_config(EtcdConfig(endpoints=[small_etcd.endpoint], prefix="/space")))
    try:
        yield running
    finally:
        await stop(running)


def etcdctl(etcd: EtcdProcess, *args: str) -> str:
    done = subprocess.run(
        [tool("etcdctl", "etcd-client"), f"--endpoints={etcd.endpoint}", *args],
        env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


async def test_a_full_etcd_refuses_writes_clearly_and_keeps_serving_reads(
    api: Running, small_etcd: EtcdProcess
) -> None:
    created = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("filler")))
    watch = api.clusters.Watch(cluster_pb2.WatchClustersRequest())
    assert (await next_message(watch)).type == meta_pb2.WATCH_EVENT_TYPE_ADDED

    # The history of one object's updates fills etcd: each keeps a 200 KiB annotation.
    current = created
    full: grpc.aio.AioRpcError | None = None
    for i in range(200):
        current.metadata.annotations["note"] = f"{i:03d}" + "x" * (200 * 1024)
        try:
            current = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=current))
        except grpc.aio.AioRpcError as err:
            full = err
            break
    assert full is not None, "etcd never filled up"
    assert full.code() == Code.RESOURCE_EXHAUSTED, full.details()
    assert "storage is full" in (full.details() or "") and "NOSPACE" in (full.details() or "")
    assert detail_of(full, error_details_pb2.ErrorInfo).reason == "STORAGE_FULL"
    assert detail_of(full, error_details_pb2.RetryInfo).retry_delay.seconds > 0
    assert "NOSPACE" in etcdctl(small_etcd, "alarm", "list")

    # Every kind of write is refused the same way; nothing is INTERNAL.
    refused = await expect_error(
        api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("one-more"))), Code.RESOURCE_EXHAUSTED
    )
    assert "storage is full" in (refused.details() or "")
    status = cluster_pb2.Cluster()
    status.CopyFrom(current)
    status.status.conditions.add(type="Ready")
    await expect_error(
        api.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=status)), Code.RESOURCE_EXHAUSTED
    )
    # Reads work: Get, List, a new watch, and the open watch saw every update that was written.
    got = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="filler"))
    assert got.metadata.resource_version == current.metadata.resource_version
    listed = await api.clusters.List(cluster_pb2.ListClustersRequest())
    assert [c.metadata.name for c in listed.items] == ["filler"]
    fresh = api.clusters.Watch(cluster_pb2.WatchClustersRequest())
    assert (await next_message(fresh)).object.metadata.name == "filler"
    fresh.cancel()

    async def watched_last() -> bool:
        event = await next_message(watch)
        return event.object.metadata.resource_version == current.metadata.resource_version

    await wait_for(watched_last, what="the open watch reaching the last update")
    watch.cancel()
    # ipamd on the same etcd: its writes are refused the same way, its reads work.
    with IpamdDaemon([small_etcd.endpoint], "/space-ipam") as ipamd:
        async with grpc.aio.insecure_channel(ipamd.target) as channel:
            ipam: ipam_pb2_grpc.IPAMServiceAsyncStub = ipam_pb2_grpc.IPAMServiceStub(channel)
            pool = ipam_pb2.Pool(name="net-full", cidr="10.93.0.0/24")
            refused_pool = await expect_error(
                ipam.CreatePool(ipam_pb2.CreatePoolRequest(pool=pool)), Code.RESOURCE_EXHAUSTED
            )
            assert "storage is full" in (refused_pool.details() or "")
            assert not (await ipam.ListPools(ipam_pb2.ListPoolsRequest())).pools

    # The recovery the README gives: compact, defragment, disarm; then writes work again.
    revision = int(current.metadata.resource_version)
    etcdctl(small_etcd, "compact", str(revision))
    etcdctl(small_etcd, "defrag")
    etcdctl(small_etcd, "alarm", "disarm")
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("after-recovery")))


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_apiservers_take_turns_compacting(own_etcd: EtcdProcess) -> None:
    """The compare-and-swap on compact_rev_key, step by step, with two compactors."""
    config = EtcdConfig(endpoints=[own_etcd.endpoint], prefix="/turns")
    stores = [EtcdStore(config), EtcdStore(config)]
    try:
        a, b = (Compactor(s.connection, interval=300) for s in stores)
        writer = stores[0]
        assert not await a.attempt()  # the first turn records where history starts
        assert not await b.attempt()  # b lost the compare: it learns the version and revision
        first = (await writer.create("/turns/k", b"0")).mod_revision
        await writer.update("/turns/k", b"1", expected_revision=first)
        assert await a.attempt()  # a's turn: compacts to where it was one turn ago
        assert not await b.attempt()
        await writer.update("/turns/k", b"2", expected_revision=(await writer.get("/turns/k")).mod_revision)
        assert await b.attempt()  # b's turn now: it compacts to the revision it saw last time
        with pytest.raises(Compacted):
            await writer.list("/turns/", revision=first)
        # Both at once, from the same view of the key: exactly one wins the turn and compacts.
        assert not await a.attempt()  # a learns the version b left
        await writer.update("/turns/k", b"3", expected_revision=(await writer.get("/turns/k")).mod_revision)
        won = await asyncio.gather(a.attempt(), b.attempt())
        assert sorted(won) == [False, True], won
        assert (await writer.get(COMPACT_KEY.decode())).value.isdigit()
        # Someone compacted further (etcd's own compaction, an operator): no error.
        await writer.compact(await writer.current_revision())
        for _ in range(3):
            await a.attempt()
            await b.attempt()
    finally:
        for s in stores:
            await s.close()


async def test_the_apiserver_compacts_on_its_interval(own_etcd: EtcdProcess) -> None:
    config = EtcdConfig(endpoints=[own_etcd.endpoint], prefix="/interval")
    runs = [await start(local_config(config, compaction_interval=0.5)) for _ in range(2)]
    store = EtcdStore(config)
    try:
        c = await runs[0].clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("history")))
        old = int(c.metadata.resource_version)

        async def compacted_past_old() -> bool:
            c.metadata.labels["tick"] = str(int(c.metadata.labels.get("tick", "0")) + 1)
            c.CopyFrom(await runs[1].clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c)))
            try:
                await store.list("/interval/", revision=old)
            except Compacted:
                return True
            return False

        await wait_for(compacted_past_old, interval=0.2, what="history before the first write compacted")
        made = [r.apiserver.compactor.compactions for r in runs if r.apiserver.compactor is not None]
        assert sum(made) >= 1
        turns = (await store.get(COMPACT_KEY.decode())).value
        assert turns.isdigit()
    finally:
        await store.close()
        for r in runs:
            await stop(r)


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_the_etcd_profile_sets_a_quota_compaction_and_a_request_limit_above_the_objects(tmp_path: Path) -> None:
    settings = env_file(REPO / "deploy/etcd/etcd.env")
    assert int(settings["ETCD_MAX_REQUEST_BYTES"]) > LimitsConfig().max_object_bytes
    client, peer = free_port(), free_port()
    env = {
        **os.environ,
        **settings,
        "ETCD_NAME": "profile",
        "ETCD_DATA_DIR": str(tmp_path / "data"),
        "ETCD_LISTEN_CLIENT_URLS": f"http://127.0.0.1:{client}",
        "ETCD_ADVERTISE_CLIENT_URLS": f"http://127.0.0.1:{client}",
        "ETCD_LISTEN_PEER_URLS": f"http://127.0.0.1:{peer}",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://127.0.0.1:{peer}",
        "ETCD_INITIAL_CLUSTER": f"profile=http://127.0.0.1:{peer}",
        "ETCD_LOGGER": "zap",  # its start line lists the configuration it runs with
        "ETCD_LOG_OUTPUTS": "stderr",
    }
    log = tmp_path / "etcd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([etcd_binary()], env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{client}"
        quota = wait_until(lambda: _metric_or_none(url, "etcd_server_quota_backend_bytes"), what="etcd serving")
        assert quota == int(settings["ETCD_QUOTA_BACKEND_BYTES"]) == 8 * 1024**3
        text = log.read_text()
        assert re.search(r'"auto-compaction-mode":\s*"periodic"', text), text[-2000:]
        assert re.search(r'"auto-compaction-retention":\s*"1h0m0s"', text), text[-2000:]
        # Timed progress notifications, which the store relies on before etcd 3.4.25.
        assert "recognized and used environment variable ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL=5s" in text
    finally:
        process.terminate()
        process.wait(30)


def _metric_or_none(url: str, name: str) -> float | None:
    try:
        return metric(url, name)
    except OSError:
        return None
