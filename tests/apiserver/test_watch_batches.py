"""Watch fan-out with events encoded once, and the batched watch (WatchBatches).

- Every watcher that gets a change as the same event type gets the same bytes, whatever its
  tenant scope or selector, and they parse into what Get returns.
- Objects written from their stored bytes (Get, List, Watch) carry one metadata field: not
  every parser merges repeated ones (protobuf.js keeps the last).
- WatchBatches sends what Watch sends, in the same order, once each, with the events that were
  ready together in one message; it resumes from a revision and sends bookmarks.
- Its initial state goes in batches of about 1 MiB, as its changes do: a watcher whose client
  does not read then holds one such message, not a page of up to 2 MiB and its copies."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from tests.support.apiserver import Running, cluster
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2

ADDED, MODIFIED, DELETED, BOOKMARK = (
    meta_pb2.WATCH_EVENT_TYPE_ADDED,
    meta_pb2.WATCH_EVENT_TYPE_MODIFIED,
    meta_pb2.WATCH_EVENT_TYPE_DELETED,
    meta_pb2.WATCH_EVENT_TYPE_BOOKMARK,
)
WITHIN = 30.0


def raw_watch(api: Running, request: cluster_pb2.WatchClustersRequest) -> Any:
    """ClusterService/Watch whose messages are handed over as the bytes that came."""
    method: Any = api.channel.unary_stream(
        "/tke.platform.v1.ClusterService/Watch", request_serializer=lambda r: r.SerializeToString()
    )
    return method(request)


async def read(call: Any) -> Any:
    """The next message of a stream (that has not ended)."""
    message = await call.read()
    assert message is not grpc.aio.EOF, "the stream ended"
    return message


async def next_change(call: Any) -> bytes:
    """The next message that is not a bookmark, as bytes."""
    async with asyncio.timeout(WITHIN):
        while True:
            data = await call.read()
            assert data is not grpc.aio.EOF
            if cluster_pb2.ClusterEvent.FromString(data).type != BOOKMARK:
                return bytes(data)


async def get(api: Running, name: str) -> cluster_pb2.Cluster:
    return await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name))


async def test_every_watcher_gets_the_same_bytes_for_the_same_event(api: Running) -> None:
    start = (await api.clusters.List(cluster_pb2.ListClustersRequest())).metadata.resource_version
    scopes = {
        "mine": cluster_pb2.WatchClustersRequest(resource_version=start),
        "every tenant": cluster_pb2.WatchClustersRequest(resource_version=start, tenant_id="*"),
        "prod": cluster_pb2.WatchClustersRequest(resource_version=start, label_selector="env=prod"),
        "not prod": cluster_pb2.WatchClustersRequest(resource_version=start, label_selector="env!=prod"),
    }
    calls = {name: raw_watch(api, request) for name, request in scopes.items()}
    try:
        created = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1", {"env": "prod"})))
        added = {name: await next_change(calls[name]) for name in ("mine", "every tenant", "prod")}
        assert len(set(added.values())) == 1
        want = cluster_pb2.ClusterEvent(type=ADDED, object=created)
        assert cluster_pb2.ClusterEvent.FromString(added["mine"]) == want

        created.metadata.labels["env"] = "dev"
        updated = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=created))
        modified = {name: await next_change(calls[name]) for name in ("mine", "every tenant")}
        assert len(set(modified.values())) == 1
        assert cluster_pb2.ClusterEvent.FromString(modified["mine"]) == cluster_pb2.ClusterEvent(
            type=MODIFIED, object=updated
        )
        # It left the "prod" selection and entered the "not prod" one.
        gone = cluster_pb2.ClusterEvent.FromString(await next_change(calls["prod"]))
        came = cluster_pb2.ClusterEvent.FromString(await next_change(calls["not prod"]))
        assert (gone.type, gone.object) == (DELETED, updated)
        assert (came.type, came.object) == (ADDED, updated)
        assert updated == await get(api, "c1")
    finally:
        for call in calls.values():
            call.cancel()


async def read_batches(call: Any, events: int) -> list[list[tuple[int, str, str]]]:
    """Batches until `events` events that are not bookmarks came; each as (type, name, version)."""
    out: list[list[tuple[int, str, str]]] = []
    seen = 0
    async with asyncio.timeout(WITHIN):
        while seen < events:
            batch = await call.read()
            assert batch is not grpc.aio.EOF
            assert batch.events, "a batch is never empty"
            got = [(e.type, e.object.metadata.name, e.object.metadata.resource_version) for e in batch.events]
            out.append(got)
            seen += sum(1 for t, _, _ in got if t != BOOKMARK)
    return out


def changes(batches: list[list[tuple[int, str, str]]]) -> list[tuple[int, str, str]]:
    return [e for batch in batches for e in batch if e[0] != BOOKMARK]


async def test_batches_carry_what_watch_sends_in_order_once_with_ready_events_together(api: Running) -> None:
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("first")))
    batched = api.clusters.WatchBatches(cluster_pb2.WatchClustersRequest())
    try:
        # The initial state, then a bookmark.
        initial = await read_batches(batched, 1)
        start = (await get(api, "first")).metadata.resource_version
        assert changes(initial) == [(ADDED, "first", start)]
        async with asyncio.timeout(WITHIN):
            while not any(e.type == BOOKMARK for e in (await read(batched)).events):
                pass
        names = [f"c{i:02d}" for i in range(20)]
        for name in names:
            await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(name)))
        await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="first"))
        live = changes(await read_batches(batched, 21))
        plain = api.clusters.Watch(cluster_pb2.WatchClustersRequest(resource_version=start))
        expected: list[tuple[int, str, str]] = []
        try:
            async with asyncio.timeout(WITHIN):
                while len(expected) < 21:
                    e = await read(plain)
                    if e.type != BOOKMARK:
                        expected.append((e.type, e.object.metadata.name, e.object.metadata.resource_version))
        finally:
            plain.cancel()
        assert [(t, name) for t, name, _ in expected] == [*((ADDED, n) for n in names), (DELETED, "first")]
        assert live == expected
        # A watch resuming from `start` finds all 21 changes ready: one message carries them.
        resumed = api.clusters.WatchBatches(cluster_pb2.WatchClustersRequest(resource_version=start))
        try:
            again = await read_batches(resumed, 21)
            assert changes(again) == expected
            assert len([batch for batch in again if any(t != BOOKMARK for t, _, _ in batch)]) == 1
            # ... and resuming from the 20th change sends only the last one.
            tail = api.clusters.WatchBatches(cluster_pb2.WatchClustersRequest(resource_version=expected[19][2]))
            try:
                assert changes(await read_batches(tail, 1)) == expected[20:]
            finally:
                tail.cancel()
        finally:
            resumed.cancel()
    finally:
        batched.cancel()


async def test_the_initial_state_goes_in_batches_of_about_a_mebibyte(api: Running) -> None:
    names = [f"big-{i}" for i in range(8)]
    for name in names:  # 250 KB each: 2 MB, one page of the initial state
        big = cluster(name)
        big.metadata.annotations["blob"] = "x" * 250_000
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=big))
    call = api.clusters.WatchBatches(cluster_pb2.WatchClustersRequest())
    sizes: list[int] = []
    added: list[str] = []
    try:
        async with asyncio.timeout(WITHIN):
            while len(added) < len(names):
                batch = await read(call)
                sizes.append(batch.ByteSize())
                added += [e.object.metadata.name for e in batch.events if e.type == ADDED]
    finally:
        call.cancel()
    assert added == names
    # 1 MiB reached at the fifth object, then the other three (before: one message of 2 MB).
    assert len(sizes) == 2 and max(sizes) < 1_300_000, sizes


async def test_an_idle_batched_watch_gets_bookmarks_that_advance(api: Running) -> None:
    call = api.clusters.WatchBatches(cluster_pb2.WatchClustersRequest())
    try:
        versions: list[int] = []
        async with asyncio.timeout(WITHIN):
            while len(versions) < 2:
                batch = await read(call)
                assert all(e.type == BOOKMARK for e in batch.events)
                versions += [int(e.object.metadata.resource_version) for e in batch.events]
        assert 0 < versions[0] <= versions[1]
    finally:
        call.cancel()


def top_fields(data: bytes) -> list[tuple[int, bytes]]:
    """The top-level fields of a message: (number, bytes of a length-delimited field's value, or
    b"" for a varint)."""
    out: list[tuple[int, bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while i < len(data):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            varint()
            out.append((number, b""))
        else:
            assert wire_type == 2, f"unexpected wire type {wire_type}"
            length = varint()
            out.append((number, data[i : i + length]))
            i += length
    return out


def one_metadata(obj: bytes) -> bool:
    return [number for number, _ in top_fields(obj)].count(1) == 1


async def test_objects_go_out_with_one_metadata_field(api: Running) -> None:
    created = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1", {"env": "prod"})))
    start = str(int(created.metadata.resource_version) - 1)
    raw: Any = {
        name: api.channel.unary_unary(
            f"/tke.platform.v1.ClusterService/{name}", request_serializer=lambda r: r.SerializeToString()
        )
        for name in ("Get", "List")
    }
    got = await raw["Get"](cluster_pb2.GetClusterRequest(name="c1"))
    assert one_metadata(got) and cluster_pb2.Cluster.FromString(got) == created
    listed = await raw["List"](cluster_pb2.ListClustersRequest())
    items = [value for number, value in top_fields(listed) if number == 2]
    assert len(items) == 1 and one_metadata(items[0])
    call = raw_watch(api, cluster_pb2.WatchClustersRequest(resource_version=start))
    try:
        event = await next_change(call)
        objects = [value for number, value in top_fields(event) if number == 2]
        assert len(objects) == 1 and one_metadata(objects[0])
        assert cluster_pb2.Cluster.FromString(objects[0]) == created
    finally:
        call.cancel()
