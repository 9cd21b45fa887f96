"""Informers against real apiservers and etcd: list then watch; after the apiserver goes away
and comes back, resume from the last resource_version without listing again (changes made
meanwhile arrive as events); after the history was compacted, list again (OUT_OF_RANGE) and
report the differences."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import grpc
import pytest

from tests.support.apiserver import cluster, local_config, machine, start, stop
from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tke.internal.controller.cache import by_cluster
from tke.internal.controller.client import CLUSTERS, MACHINES, ApiClient
from tke.internal.controller.informer import Change, Informer
from tke.internal.rpc.server import ListenConfig
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.platform.v1 import cluster_pb2, machine_pb2

pytestmark = pytest.mark.timeout(90)


async def test_resume_after_a_broken_stream_then_relist_after_compaction(etcd_config: EtcdConfig) -> None:
    port = free_port()
    config = local_config(etcd_config, listen=ListenConfig(address=f"127.0.0.1:{port}"))
    other = await start(local_config(etcd_config))  # writes while the informer's apiserver is down
    a = await start(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    informer: Informer[cluster_pb2.Cluster] = Informer(ApiClient(CLUSTERS, channel), resync=0, retry_cap=0.3)
    seen: list[tuple[Change, str]] = []
    informer.add_handler(lambda change, obj: seen.append((change, obj.metadata.name)))
    task = asyncio.create_task(informer.run())
    store = EtcdStore(etcd_config)
    try:
        for name in ("c1", "c2", "c3"):
            await other.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(name)))
        await asyncio.wait_for(informer.synced.wait(), 10)

        async def names() -> list[str]:
            return sorted(k.split("/")[1] for k in informer.cache.all_keys())

        async def has(expected: list[str]) -> bool:
            return await names() == expected

        await wait_for(lambda: has(["c1", "c2", "c3"]))
        assert informer.lists == 1

        # The informer's apiserver goes away; changes happen elsewhere; it comes back.
        resumes = informer.resumes
        await stop(a)
        await other.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c4")))
        await other.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="c1"))
        await wait_for(lambda: informer.resumes > resumes, what="the informer noticing its stream broke")
        a = await start(config)
        await wait_for(lambda: has(["c2", "c3", "c4"]))
        assert informer.lists == 1 and informer.resumes >= 1  # resumed, not relisted
        assert (Change.DELETED, "c1") in seen and (Change.ADDED, "c4") in seen

        # Down again; this time the history it would resume from is compacted.
        await stop(a)
        await other.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c5")))
        await other.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="c2"))
        await store.compact(await store.current_revision())
        a = await start(config)
        await wait_for(lambda: has(["c3", "c4", "c5"]))
        assert informer.lists == 2  # OUT_OF_RANGE made it list again
        assert (Change.DELETED, "c2") in seen and (Change.ADDED, "c5") in seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await channel.close()
        await store.close()
        await stop(a)
        await stop(other)


async def test_machines_are_indexed_by_cluster_and_resync_hands_everything_again(etcd_config: EtcdConfig) -> None:
    api = await start(replace(local_config(etcd_config)))
    informer: Informer[machine_pb2.Machine] = Informer(
        ApiClient(MACHINES, api.channel), resync=0.3, indexers={"cluster": by_cluster}
    )
    resyncs: list[str] = []
    informer.add_handler(lambda change, obj: resyncs.append(obj.metadata.name) if change is Change.RESYNC else None)
    task = asyncio.create_task(informer.run())
    try:
        for name in ("a", "b"):
            await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(name)))
        await api.machines.Create(machine_pb2.CreateMachineRequest(machine=machine("m1", "a")))
        await api.machines.Create(machine_pb2.CreateMachineRequest(machine=machine("m2", "a", ip="192.0.2.11")))
        await api.machines.Create(machine_pb2.CreateMachineRequest(machine=machine("m3", "b", ip="192.0.2.12")))

        def names(cluster_key: str) -> list[str]:
            return [m.metadata.name for m in informer.cache.by_index("cluster", cluster_key)]

        # Both at once: the informer's first List may hold m1 and m2 while m3 still comes by
        # its watch.
        async def indexed() -> bool:
            return names("default/a") == ["m1", "m2"] and names("default/b") == ["m3"]

        await wait_for(indexed)
        await api.machines.Delete(machine_pb2.DeleteMachineRequest(name="m2"))

        async def reindexed() -> bool:
            return names("default/a") == ["m1"]

        await wait_for(reindexed)

        async def resynced() -> bool:
            return {"m1", "m3"} <= set(resyncs)

        await wait_for(resynced)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stop(api)
