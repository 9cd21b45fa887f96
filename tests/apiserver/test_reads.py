"""The read tests: Get and List give the same answers whether the watch cache answers them or
etcd does (`read_api` runs each test against both; test_list.py and test_tenancy.py run theirs
against both too). A read is consistent: it sees every write that finished before it started,
made through this apiserver, another one, or straight into etcd.

Then the cache itself (tke.internal.apiserver.cache): its reads against etcd's own at the same
revision after random changes, and that it answers reads (not etcd) once it has caught up."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.support.apiserver import Running, cluster, local_config, machine, start, stop
from tests.support.memory_store import MemoryStore
from tests.support.rpc import expect_error
from tests.support.waiting import wait_for
from tke.internal.apiserver.cache import KindCache, RevisionProbe, last_write_key
from tke.internal.apiserver.watch import Hub
from tke.internal.metrics import WATCH_CACHE_READS
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.etcd.store import progress_is_ordered
from tke.internal.storage.store import Event, EventType, Item, NotFound, Page, TooLarge
from tke.platform.v1 import cluster_pb2, machine_pb2

Code = grpc.StatusCode


@pytest.fixture
async def other(etcd_config: EtcdConfig) -> AsyncIterator[Running]:
    """A second apiserver on the same etcd and prefix, without a watch cache."""
    running = await start(local_config(etcd_config, watch_cache=False))
    try:
        yield running
    finally:
        await stop(running)


def _cache_reads(kind: str, source: str = "cache") -> float:
    return float(WATCH_CACHE_READS.labels(kind, source)._value.get())


async def test_get_and_list_see_every_write_of_this_apiserver_at_once(read_api: Running) -> None:
    api = read_api
    for i in range(10):
        created = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(f"c{i}")))
        got = await api.clusters.Get(cluster_pb2.GetClusterRequest(name=f"c{i}"))
        assert got == created
        got.spec.version = "1.31.0"
        updated = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=got))
        assert await api.clusters.Get(cluster_pb2.GetClusterRequest(name=f"c{i}")) == updated
        listed = await api.clusters.List(cluster_pb2.ListClustersRequest())
        assert listed.items[-1] == updated
        assert int(listed.metadata.resource_version) >= int(updated.metadata.resource_version)
        await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name=f"c{i}"))
        await expect_error(api.clusters.Get(cluster_pb2.GetClusterRequest(name=f"c{i}")), Code.NOT_FOUND)
        assert [c.metadata.name for c in (await api.clusters.List(cluster_pb2.ListClustersRequest())).items] == []


async def test_reads_see_writes_made_through_another_apiserver(read_api: Running, other: Running) -> None:
    before = _cache_reads("clusters")
    for i in range(10):
        created = await other.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(f"o{i}")))
        assert await read_api.clusters.Get(cluster_pb2.GetClusterRequest(name=f"o{i}")) == created
        created.spec.version = "1.31.0"
        updated = await other.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=created))
        listed = await read_api.clusters.List(cluster_pb2.ListClustersRequest(page_size=1, continue_token=""))
        assert [c.metadata.name for c in listed.items] == ["o0"]
        assert await read_api.clusters.Get(cluster_pb2.GetClusterRequest(name=f"o{i}")) == updated
        await other.clusters.Delete(cluster_pb2.DeleteClusterRequest(name=f"o{i}"))
        await expect_error(read_api.clusters.Get(cluster_pb2.GetClusterRequest(name=f"o{i}")), Code.NOT_FOUND)
        if i == 0:
            await read_api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("o0")))
    # The cache answered (it is not etcd answering both parametrizations).
    if read_api.apiserver.config.watch_cache:
        assert _cache_reads("clusters") > before


async def test_a_read_after_writes_to_other_kinds_waits_for_the_cache_to_catch_up(
    read_api: Running, other: Running
) -> None:
    """The latest revision of etcd is another kind's (or not the apiserver's at all): the
    clusters' last write is one the cache has applied, so the cache answers; the machines'
    last write is the one just made through the other apiserver, so their cache answers once
    its watch has brought it."""
    created = await read_api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1")))
    cache = read_api.apiserver.clusters.cache
    store = read_api.apiserver.store
    for i in range(5):
        await other.machines.Create(machine_pb2.CreateMachineRequest(machine=machine(f"m{i}", "c1")))
        await store.create(f"{read_api.apiserver.prefix}-elsewhere/{i}", b"not the apiserver's")
        before = _cache_reads("clusters"), _cache_reads("machines")
        assert await read_api.clusters.Get(cluster_pb2.GetClusterRequest(name="c1")) == created
        listed = await read_api.machines.List(machine_pb2.ListMachinesRequest(cluster_name="c1"))
        assert [m.metadata.name for m in listed.items] == [f"m{j}" for j in range(i + 1)]
        if cache is not None:
            assert (_cache_reads("clusters"), _cache_reads("machines")) == (before[0] + 1, before[1] + 1)


async def test_continue_tokens_work_across_apiservers_with_and_without_a_cache(
    read_api: Running, other: Running
) -> None:
    for i in range(6):
        await read_api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(f"c{i}")))
    for first, second in [(read_api, other), (other, read_api)]:
        page = await first.clusters.List(cluster_pb2.ListClustersRequest(page_size=2))
        rest = await second.clusters.List(
            cluster_pb2.ListClustersRequest(page_size=2, continue_token=page.metadata.continue_token)
        )
        assert [c.metadata.name for c in rest.items] == ["c2", "c3"]
        assert rest.metadata.resource_version == page.metadata.resource_version


async def test_a_page_stops_at_its_byte_limit_and_the_next_one_goes_on(read_api: Running) -> None:
    for i in range(9):
        await read_api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(f"c{i}")))
    one = len((await read_api.clusters.Get(cluster_pb2.GetClusterRequest(name="c0"))).SerializeToString())
    read_api.apiserver.clusters.max_page_bytes = 3 * one  # about three objects a page
    names, token, pages = [], "", 0
    while True:
        page = await read_api.clusters.List(cluster_pb2.ListClustersRequest(page_size=100, continue_token=token))
        assert 1 <= len(page.items) <= 4
        names += [c.metadata.name for c in page.items]
        pages += 1
        token = page.metadata.continue_token
        if not token:
            break
    assert names == [f"c{i}" for i in range(9)]
    assert pages >= 3


async def test_get_validates_like_etcd_reads(read_api: Running) -> None:
    await expect_error(read_api.clusters.Get(cluster_pb2.GetClusterRequest(name="")), Code.INVALID_ARGUMENT)
    await expect_error(read_api.clusters.Get(cluster_pb2.GetClusterRequest(name="nope")), Code.NOT_FOUND)
    await expect_error(
        read_api.clusters.Get(cluster_pb2.GetClusterRequest(name="x", tenant_id="*")), Code.INVALID_ARGUMENT
    )


# -- the cache against etcd's own reads ------------------------------------------------------


def _decode(item: Item) -> Item:
    return item


def _frame(item: Item) -> bytes:
    return f"{item.key}@{item.mod_revision}:".encode() + item.value


async def test_the_caches_reads_are_etcds_at_the_same_revision(store: EtcdStore, etcd_prefix: str) -> None:
    """Random creates, updates and deletes under a few tenants, then every list the registry
    could ask for (prefixes, starting keys, limits) from the cache and from etcd at the cache's
    revision: the same pages. Reads at a revision the cache is not at go to etcd."""
    root = f"{etcd_prefix}/things/"
    mark = (last_write_key(etcd_prefix, "things"),)  # touched by every write, as the registry does
    cache = KindCache(store, root, RevisionProbe(store, etcd_prefix), frame=_frame, last_write=mark[0])
    hub: Hub[Item] = Hub(store, root, _decode, cache=cache, progress_interval=0.2)
    await hub.start()
    rng = random.Random(17)
    try:
        keys = [f"{root}{tenant}/{name}" for tenant in ("a", "b", "bb") for name in ("x", "y", "yy", "z")]
        live: dict[str, Item] = {}
        early = 0
        for step in range(60):
            key = rng.choice(keys)
            if key in live and rng.random() < 0.4:
                await store.delete(key, expected_revision=live.pop(key).mod_revision, touches=mark)
            elif key in live:
                live[key] = await store.update(
                    key, f"v{step}".encode(), expected_revision=live[key].mod_revision, touches=mark
                )
            else:
                live[key] = await store.create(key, f"v{step}".encode(), touches=mark)
            if step == 20:
                early = await store.current_revision()
        # The last write is the kind's: the read waits until the cache has applied it.
        assert await cache.reads() is cache
        revision = cache.revision
        for prefix in (root, f"{root}a/", f"{root}b/", f"{root}bb/", f"{root}c/"):
            for start in ("", prefix, f"{prefix}y", f"{prefix}y\0", f"{root}b/z\0"):
                for limit in (0, 1, 2, 5):
                    got = await cache.list(prefix, start=start, limit=limit)
                    want = await store.list(prefix, start=start, limit=limit, revision=revision)
                    assert got == want, (prefix, start, limit)
                    if limit:  # the List fast path: the same page, encoded
                        framed, last, more = cache.framed_page(prefix, start, limit, 1 << 20)
                        assert framed == [_frame(item) for item in want.items]
                        assert (last, more) == (want.items[-1].key if want.items else "", want.more)
        for key in keys:
            if key in live:
                assert await cache.get(key) == live[key]
            else:
                with pytest.raises(NotFound):
                    await cache.get(key)
        # An older revision, with changes since: etcd's history answers.
        assert await cache.list(root, revision=early) == await store.list(root, revision=early)
    finally:
        await hub.stop()


async def test_the_cache_answers_once_caught_up_and_etcd_when_it_cannot_vouch(
    store: EtcdStore, etcd_prefix: str
) -> None:
    """With progress notifications it can trust (etcd 3.4.25 or later orders them with changes;
    here no change of the kind is pending when one is asked for), the cache answers reads after
    writes to other keys; without, etcd does, until the kind's own changes catch up."""
    root = f"{etcd_prefix}/things/"
    cache = KindCache(store, root, RevisionProbe(store, etcd_prefix), fresh_within=0.5, progress_ordered=True)
    hub: Hub[Item] = Hub(store, root, _decode, cache=cache, progress_interval=3600)
    await hub.start()
    try:
        await store.create(f"{root}a/x", b"1")
        await wait_for(lambda: len(cache) == 1)
        await store.create(f"{etcd_prefix}/elsewhere", b"2")  # the latest revision is not the kind's
        assert await cache.reads() is cache  # a progress notification requested on demand
        cache.progress_trusted = False  # an etcd before 3.4.25, or one that sent a notification early
        await store.create(f"{etcd_prefix}/elsewhere-2", b"3")
        assert await cache.reads() is store  # only its own changes vouch now: etcd answers
        await store.create(f"{root}a/y", b"4")
        await wait_for(lambda: len(cache) == 2)
        assert await cache.reads() is cache
    finally:
        await hub.stop()


def test_progress_notifications_are_trusted_from_the_etcd_versions_that_order_them() -> None:
    assert not progress_is_ordered("3.4.23") and not progress_is_ordered("3.5.7")
    assert progress_is_ordered("3.4.25") and progress_is_ordered("3.5.8") and progress_is_ordered("3.6.0")
    assert not progress_is_ordered("not a version")


async def test_the_cache_loads_objects_too_big_to_read_a_thousand_at_once(store: EtcdStore, etcd_prefix: str) -> None:
    """A load page over the etcd channel's limit (TooLarge) is read again in smaller pages."""
    root = f"{etcd_prefix}/things/"
    for i in range(30):
        await store.create(f"{root}a/{i:02d}", b"x")
    real_list = store.list

    async def small_answers_only(prefix: str, *, start: str = "", limit: int = 0, revision: int = 0) -> Page:
        if not limit or limit > 10:
            raise TooLarge("over the channel's limit")
        return await real_list(prefix, start=start, limit=limit, revision=revision)

    store.list = small_answers_only  # type: ignore[method-assign]
    cache = KindCache(store, root, RevisionProbe(store, etcd_prefix))
    hub: Hub[Item] = Hub(store, root, _decode, cache=cache)
    try:
        async with asyncio.timeout(30):  # a load that keeps failing never starts
            await hub.start()
        assert len(cache) == 30
    finally:
        await hub.stop()


async def test_the_cache_vouches_for_the_current_revision_by_the_kinds_last_write(
    store: EtcdStore, etcd_prefix: str
) -> None:
    """Writes elsewhere do not keep the cache from answering; a write of the kind makes a read
    wait until the hub has applied it, and read etcd when it does not come in time."""
    root = f"{etcd_prefix}/things/"
    mark = last_write_key(etcd_prefix, "things")
    cache = KindCache(store, root, RevisionProbe(store, etcd_prefix), fresh_within=0.5, last_write=mark)
    hub: Hub[Item] = Hub(store, root, _decode, cache=cache, progress_interval=3600)
    await hub.start()
    try:
        written = await store.create(f"{root}a/x", b"1", touches=(mark,))
        assert await cache.reads() is cache
        assert await cache.get(written.key) == written  # the read waited for the write's change
        await store.create(f"{etcd_prefix}/elsewhere", b"2")  # the latest revision is not the kind's
        assert await cache.reads() is cache
        assert cache.revision == await store.current_revision()
    finally:
        await hub.stop()
    await store.create(f"{root}a/y", b"3", touches=(mark,))  # no hub to bring the change
    assert await cache.reads() is store


async def test_a_change_below_what_the_cache_vouched_for_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    """A write that did not touch the kind's last-write key (straight into etcd) can come after
    the cache vouched for its revision: the cache says so, and vouches only for its changes."""
    store = MemoryStore()
    root, mark = "/p/things/", last_write_key("/p", "things")
    first = await store.create(f"{root}a/x", b"1", touches=(mark,))
    cache = KindCache(store, root, RevisionProbe(store, "/p"), last_write=mark)
    cache.load([first], await store.current_revision())
    await store.create("/p/elsewhere", b"2")
    assert await cache.reads() is cache and cache.revision == await store.current_revision()
    straight = await store.create(f"{root}a/y", b"3")  # no touch
    await store.create("/p/elsewhere-2", b"4")
    assert await cache.reads() is cache  # what it cannot know: the change has not come
    cache.apply(Event(EventType.PUT, straight, None))
    assert "did not touch /p/last-write/things" in caplog.text
    assert cache.revision == straight.mod_revision
