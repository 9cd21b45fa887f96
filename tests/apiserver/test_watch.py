"""Watch: initial state, live events, selectors, resume from a revision, catch-up older than the
window, compaction, bookmarks, slow clients, an etcd restart and a graceful server stop."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.etcd import EtcdProcess
from tests.support.waiting import wait_for
from tke.internal.apiserver.app import WatchConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2

ADDED, MODIFIED, DELETED, BOOKMARK = (
    meta_pb2.WATCH_EVENT_TYPE_ADDED,
    meta_pb2.WATCH_EVENT_TYPE_MODIFIED,
    meta_pb2.WATCH_EVENT_TYPE_DELETED,
    meta_pb2.WATCH_EVENT_TYPE_BOOKMARK,
)


async def take(call: Any, n: int, *, within: float = 30.0, bookmarks: bool = False) -> list[tuple[int, str, str]]:
    """The next `n` events as (type, name, resource_version), skipping bookmarks unless asked."""
    out: list[tuple[int, str, str]] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            event = await call.read()
            assert event is not grpc.aio.EOF, f"stream ended after {out}"
            if event.type == BOOKMARK and not bookmarks:
                continue
            out.append((event.type, event.object.metadata.name, event.object.metadata.resource_version))
    return out


async def quiet(call: Any, seconds: float = 0.7) -> None:
    """Assert no non-bookmark event arrives for a while."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                event = await call.read()
                assert event is not grpc.aio.EOF
                assert event.type == BOOKMARK, f"unexpected event {event}"
    except TimeoutError:
        pass


async def create(api: Running, name: str, labels: dict[str, str] | None = None) -> cluster_pb2.Cluster:
    return await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(name, labels)))


async def relabel(api: Running, name: str, labels: dict[str, str]) -> cluster_pb2.Cluster:
    c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name))
    c.metadata.labels.clear()
    c.metadata.labels.update(labels)
    return await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c))


async def test_initial_state_then_bookmark_then_live_events(api: Running) -> None:
    await create(api, "one")
    await create(api, "two")
    call = api.clusters.Watch(cluster_pb2.WatchClustersRequest())
    initial = await take(call, 3, bookmarks=True)
    assert [(t, n) for t, n, _ in initial] == [(ADDED, "one"), (ADDED, "two"), (BOOKMARK, "")]
    three = await create(api, "three")
    await relabel(api, "one", {"x": "y"})
    await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="two"))
    live = await take(call, 3)
    assert [(t, n) for t, n, _ in live] == [(ADDED, "three"), (MODIFIED, "one"), (DELETED, "two")]
    assert live[0][2] == three.metadata.resource_version
    call.cancel()


async def test_selector_turns_label_changes_into_added_and_deleted(api: Running) -> None:
    call = api.clusters.Watch(cluster_pb2.WatchClustersRequest(label_selector="env=prod"))
    await take(call, 1, bookmarks=True)  # the initial bookmark
    await create(api, "a", {"env": "dev"})
    await create(api, "b", {"env": "prod"})
    await relabel(api, "a", {"env": "prod"})  # starts matching
    await relabel(api, "b", {"env": "dev"})  # stops matching
    await relabel(api, "a", {"env": "prod", "more": "x"})
    await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="b"))  # not matching: no event
    await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="a"))
    events = await take(call, 5)
    assert [(t, n) for t, n, _ in events] == [
        (ADDED, "b"),
        (ADDED, "a"),
        (DELETED, "b"),
        (MODIFIED, "a"),
        (DELETED, "a"),
    ]
    await quiet(call)
    call.cancel()


async def test_resume_from_a_revision_neither_loses_nor_repeats(api: Running) -> None:
    listed = await api.clusters.List(cluster_pb2.ListClustersRequest())
    call = api.clusters.Watch(cluster_pb2.WatchClustersRequest(resource_version=listed.metadata.resource_version))
    for i in range(3):
        await create(api, f"r{i}")
    first = await take(call, 2)
    call.cancel()
    for i in range(3, 6):
        await create(api, f"r{i}")
    resumed = api.clusters.Watch(cluster_pb2.WatchClustersRequest(resource_version=first[-1][2]))
    rest = await take(resumed, 4)
    assert [n for _, n, _ in first + rest] == [f"r{i}" for i in range(6)]
    await quiet(resumed)
    resumed.cancel()


async def test_resume_from_before_the_window_catches_up_from_etcd(etcd_config: EtcdConfig) -> None:
    config = local_config(etcd_config)
    api = await start(replace(config, watch=replace(config.watch, window=3)))
    try:
        start_rv = (await api.clusters.List(cluster_pb2.ListClustersRequest())).metadata.resource_version
        for i in range(10):
            await create(api, f"w{i}")
        assert not api.apiserver.cluster_hub.covers(int(start_rv))
        call = api.clusters.Watch(cluster_pb2.WatchClustersRequest(resource_version=start_rv))
        events = await take(call, 10)
        assert [n for _, n, _ in events] == [f"w{i}" for i in range(10)]
        await create(api, "live")
        assert [n for _, n, _ in await take(call, 1)] == ["live"]
        await quiet(call)
        call.cancel()
    finally:
        await stop(api)


async def test_a_catch_up_bigger_than_a_grpc_message_arrives_whole(etcd_config: EtcdConfig) -> None:
    """etcd sends a watch's history as one response per up to 1000 revisions: 150 changes of a
    250 KB object (each with its previous state) are some 75 MB, over the 64 MiB the etcd client
    takes in one message. Unfragmented, the catch-up failed and resumed at the same revision
    forever, and the client got nothing."""
    config = local_config(etcd_config)
    api = await start(replace(config, watch=replace(config.watch, window=3)))
    try:
        big = cluster("big")
        big.metadata.annotations["blob"] = "a" * 250_000
        start_rv = (await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=big))).metadata.resource_version
        for i in range(150):
            big.metadata.annotations["blob"] = chr(ord("b") + i % 20) * 250_000
            big.metadata.resource_version = ""
            await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=big))
        assert not api.apiserver.cluster_hub.covers(int(start_rv))
        call = api.clusters.Watch(cluster_pb2.WatchClustersRequest(resource_version=start_rv))
        events = await take(call, 150, within=60)
        assert [t for t, _, _ in events] == [MODIFIED] * 150
        assert len({rv for _, _, rv in events}) == 150
        call.cancel()
    finally:
        await stop(api)


async def test_watch_from_a_compacted_revision_is_out_of_range(api: Running) -> None:
    old = await create(api, "old")
    for i in range(3):
        await relabel(api, "old", {"i": str(i)})
    store = api.apiserver.store
    await store.compact(await store.current_revision())  # type: ignore[attr-defined]
    # Make the hub's window start after the compaction too: restart the apiserver's view.
    api.apiserver.cluster_hub._oldest = await store.current_revision()
    call = api.clusters.Watch(cluster_pb2.WatchClustersRequest(resource_version=old.metadata.resource_version))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await take(call, 1)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "list again" in (info.value.details() or "")


async def test_idle_watch_gets_periodic_bookmarks_that_advance(api: Running) -> None:
    call = api.clusters.Watch(cluster_pb2.WatchClustersRequest())
    first = await take(call, 1, bookmarks=True)
    assert first[0][0] == BOOKMARK
    # Another kind changes: the cluster watch's bookmark still moves on (etcd progress).
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("host")))
    await take(call, 1)
    marks = await take(call, 2, bookmarks=True)
    assert all(t == BOOKMARK for t, _, _ in marks)
    assert int(marks[-1][2]) >= int(first[0][2])
    call.cancel()


async def test_a_client_too_slow_to_keep_up_is_ended_with_resource_exhausted(etcd_config: EtcdConfig) -> None:
    config = local_config(etcd_config)
    api = await start(replace(config, watch=WatchConfig(client_queue=5, bookmark_interval=60)))
    try:
        listed = await api.clusters.List(cluster_pb2.ListClustersRequest())
        call = api.clusters.Watch(cluster_pb2.WatchClustersRequest(resource_version=listed.metadata.resource_version))
        await wait_for(lambda: api.apiserver.cluster_hub.subscribers == 1, what="the watch registering")
        big = "x" * 200_000  # fill HTTP/2 flow-control windows and socket buffers (30 MB)
        for i in range(150):
            c = cluster(f"s{i:02d}")
            c.metadata.annotations["tke.cloud/blob"] = big
            await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async with asyncio.timeout(30):
                while True:
                    event = await call.read()
                    assert event is not grpc.aio.EOF
                    received += 1
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "watch again from resource_version" in (info.value.details() or "")
        assert received < 150
        assert api.apiserver.cluster_hub.subscribers == 0
    finally:
        await stop(api)


async def test_graceful_stop_ends_watches_cleanly(api: Running) -> None:
    call = api.clusters.Watch(cluster_pb2.WatchClustersRequest())
    await take(call, 1, bookmarks=True)
    await api.apiserver.stop()
    async with asyncio.timeout(30):
        while await call.read() is not grpc.aio.EOF:
            pass
    assert await call.code() == grpc.StatusCode.OK


async def test_watch_and_writes_survive_an_etcd_restart(tmp_path: Path, etcd_prefix: str) -> None:
    server = EtcdProcess(tmp_path / "etcd")
    server.start()
    api = None
    try:
        api = await start(local_config(EtcdConfig(endpoints=[server.endpoint], prefix=etcd_prefix, retry_budget=20)))
        call = api.clusters.Watch(cluster_pb2.WatchClustersRequest())
        await take(call, 1, bookmarks=True)
        await create(api, "before")
        server.kill()
        server.start()
        # Writes go through again once etcd is back (retried inside the apiserver).
        await create(api, "after-1")
        await create(api, "after-2")
        events = await take(call, 3)
        assert [n for _, n, _ in events] == ["before", "after-1", "after-2"]
        await quiet(call)
        call.cancel()
    finally:
        if api is not None:
            await stop(api)
        server.stop()
