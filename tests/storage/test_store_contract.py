"""The Store contract (tke.internal.storage.store) and its lease extension (lease.py), run
against every implementation: etcd (EtcdStore over the session's real etcd) and the in-memory
fake (tests.support.memory_store). Every method, its results and its errors; where the two
differ, the fake is wrong, since unit tests trust it to stand in for etcd.

Each test works under its own key prefix; revisions are store-wide, so tests compare them
with each other, never with fixed numbers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from tests.support.memory_store import MemoryStore
from tests.support.waiting import wait_for
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.lease import LeasedStore, LeaseExpired
from tke.internal.storage.store import (
    AlreadyExists,
    Claim,
    Claimed,
    Compacted,
    Conflict,
    Event,
    EventType,
    FutureRevision,
    Guard,
    Item,
    NotFound,
    PreconditionFailed,
    Progress,
    WatchMessage,
)

WITHIN = 30.0  # seconds a watch may take to deliver what the test waits for


class Subject(LeasedStore, Protocol):
    """What the tests drive: the Store with leases, and compaction (an operator's tool that
    both implementations have, outside the contract)."""

    async def compact(self, revision: int) -> None: ...


@pytest.fixture(params=["memory", "etcd"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "memory":
        yield MemoryStore()
        return
    etcd_config: EtcdConfig = request.getfixturevalue("etcd_config")
    store = EtcdStore(etcd_config)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def p(etcd_prefix: str) -> str:
    """This test's key prefix, with its trailing slash."""
    return f"{etcd_prefix}/"


@contextlib.asynccontextmanager
async def watching(kv: Subject, prefix: str, after: int) -> AsyncIterator[AsyncIterator[WatchMessage]]:
    """A watch that is closed (its stream to the store ended) when the block is left."""
    stream = kv.watch(prefix, after_revision=after)
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


async def events(kv: Subject, prefix: str, after: int, until: int = 0, count: int = 0) -> list[Event]:
    """The events a watch from `after` delivers up to revision `until` (inclusive), or the
    first `count` of them, checking on the way that they come in revision order and that no
    Progress runs ahead of them."""
    out: list[Event] = []
    covered = after  # every change up to here was delivered
    async with asyncio.timeout(WITHIN), watching(kv, prefix, after) as stream:
        async for message in stream:
            if isinstance(message, Progress):
                assert message.revision >= covered, f"progress went back: {message} after {covered}"
                covered = message.revision
                assert not until or covered < until, f"progress {covered} past {until} without its events: {out}"
                continue
            # The keys of one transaction share its revision; anything else must move on.
            same_transaction = bool(out) and message.item.mod_revision == covered
            assert message.item.mod_revision > covered or (
                same_transaction and message.item.key not in {e.item.key for e in out if e.item.mod_revision == covered}
            ), f"{message} repeats or reorders"
            covered = message.item.mod_revision
            out.append(message)
            if (until and covered >= until) or len(out) == count:
                return out
    raise AssertionError("the watch ended")


def put(item: Item, prev: bytes | None) -> Event:
    return Event(EventType.PUT, item, prev)


def deleted(last: Item, revision: int) -> Event:
    """A DELETE event as the contract describes it: the last state, at the delete's revision."""
    gone = Item(last.key, last.value, revision, last.create_revision)
    return Event(EventType.DELETE, gone, last.value)


# -- create, get, revisions ----------------------------------------------------------------------


async def test_create_then_get_and_revisions_are_store_wide(kv: Subject, p: str) -> None:
    before = await kv.current_revision()
    a = await kv.create(p + "a", b"1")
    assert a == Item(p + "a", b"1", a.mod_revision, a.mod_revision)
    assert a.mod_revision > before and await kv.current_revision() == a.mod_revision
    assert await kv.get(p + "a") == a
    b = await kv.create(p + "b", b"")  # an empty value is a value
    assert b.mod_revision > a.mod_revision and (await kv.get(p + "b")).value == b""
    with pytest.raises(NotFound):
        await kv.get(p + "missing")
    with pytest.raises(NotFound):
        await kv.get(p)  # the prefix itself is no key


async def test_create_refuses_a_present_key_and_changes_nothing(kv: Subject, p: str) -> None:
    a = await kv.create(p + "a", b"1")
    revision = await kv.current_revision()
    with pytest.raises(AlreadyExists):
        await kv.create(p + "a", b"2")
    assert await kv.get(p + "a") == a
    assert await kv.current_revision() == revision  # a refused write is no write


# -- update and delete: compare-and-swap ---------------------------------------------------------


async def test_update_is_compare_and_swap_and_keeps_the_create_revision(kv: Subject, p: str) -> None:
    a = await kv.create(p + "a", b"1")
    u = await kv.update(p + "a", b"2", expected_revision=a.mod_revision)
    assert u == Item(p + "a", b"2", u.mod_revision, a.create_revision) and u.mod_revision > a.mod_revision
    assert await kv.get(p + "a") == u
    same = await kv.update(p + "a", b"2", expected_revision=u.mod_revision)  # the same value is a write
    assert same.mod_revision > u.mod_revision
    with pytest.raises(Conflict) as stale:
        await kv.update(p + "a", b"3", expected_revision=a.mod_revision)
    assert stale.value.key == p + "a" and stale.value.current == same
    assert await kv.get(p + "a") == same
    with pytest.raises(NotFound):
        await kv.update(p + "missing", b"1", expected_revision=a.mod_revision)


async def test_delete_is_compare_and_swap_and_returns_its_revision(kv: Subject, p: str) -> None:
    a = await kv.create(p + "a", b"1")
    u = await kv.update(p + "a", b"2", expected_revision=a.mod_revision)
    with pytest.raises(Conflict) as stale:
        await kv.delete(p + "a", expected_revision=a.mod_revision)
    assert stale.value.current == u
    revision = await kv.delete(p + "a", expected_revision=u.mod_revision)
    assert revision > u.mod_revision and revision == await kv.current_revision()
    with pytest.raises(NotFound):
        await kv.get(p + "a")
    with pytest.raises(NotFound):
        await kv.delete(p + "a", expected_revision=u.mod_revision)
    again = await kv.create(p + "a", b"3")  # a new life: a new create_revision
    assert again.create_revision == again.mod_revision > revision


# -- guards ------------------------------------------------------------------------------------


async def test_guards_make_a_create_depend_on_other_keys(kv: Subject, p: str) -> None:
    parent = await kv.create(p + "parent", b"v1")
    other = await kv.create(p + "other", b"x")
    child = await kv.create(p + "child", b"c", guards=[Guard(parent.key, parent.mod_revision)])
    assert child.value == b"c"

    changed = await kv.update(parent.key, b"v2", expected_revision=parent.mod_revision)
    stale = Guard(parent.key, parent.mod_revision)
    with pytest.raises(PreconditionFailed) as failed:
        await kv.create(p + "child2", b"c", guards=[Guard(other.key, other.mod_revision), stale])
    assert failed.value.guard == stale  # the guard that did not hold
    with pytest.raises(NotFound):
        await kv.get(p + "child2")
    absent = Guard(p + "nobody", 1)
    with pytest.raises(PreconditionFailed) as failed:
        await kv.create(p + "child2", b"c", guards=[absent])
    assert failed.value.guard == absent
    with pytest.raises(AlreadyExists):  # the key's own state is checked first
        await kv.create(p + "child", b"c", guards=[stale])
    assert await kv.create(p + "child2", b"c", guards=[Guard(changed.key, changed.mod_revision)])


# -- claims and releases -------------------------------------------------------------------------


async def test_claims_are_taken_with_the_write_or_not_at_all(kv: Subject, p: str) -> None:
    a = await kv.create(p + "obj/a", b"a1", claims=[Claim(p + "ip/1", b"a"), Claim(p + "ip/2", b"a")])
    assert (await kv.get(p + "ip/1")).mod_revision == a.mod_revision == (await kv.get(p + "ip/2")).mod_revision
    with pytest.raises(Claimed) as taken:
        await kv.create(p + "obj/b", b"b1", claims=[Claim(p + "ip/3", b"b"), Claim(p + "ip/2", b"b")])
    assert taken.value.claim == Claim(p + "ip/2", b"b") and taken.value.holder.value == b"a"
    for absent in ("obj/b", "ip/3"):
        with pytest.raises(NotFound):
            await kv.get(p + absent)
    with pytest.raises(AlreadyExists):  # the key's own state is checked first
        await kv.create(p + "obj/a", b"a2", claims=[Claim(p + "ip/1", b"a")])


async def test_an_update_moves_claims_and_a_delete_releases_them(kv: Subject, p: str) -> None:
    a = await kv.create(p + "obj/a", b"a1", claims=[Claim(p + "ip/1", b"a")])
    held = await kv.get(p + "ip/1")
    await kv.create(p + "obj/b", b"b1", claims=[Claim(p + "ip/2", b"b")])
    with pytest.raises(Claimed):  # b's address: nothing changes
        await kv.update(
            a.key,
            b"a2",
            expected_revision=a.mod_revision,
            claims=[Claim(p + "ip/2", b"a")],
            releases=[Guard(held.key, held.mod_revision)],
        )
    assert (await kv.get(a.key)).value == b"a1" and (await kv.get(held.key)).value == b"a"
    with pytest.raises(PreconditionFailed):  # a release of a key not at its revision
        await kv.update(
            a.key, b"a2", expected_revision=a.mod_revision, releases=[Guard(held.key, held.mod_revision + 1)]
        )
    with pytest.raises(Conflict):  # the key's own revision is checked first
        await kv.update(a.key, b"a2", expected_revision=a.mod_revision + 100, claims=[Claim(p + "ip/2", b"a")])

    moved = await kv.update(
        a.key,
        b"a2",
        expected_revision=a.mod_revision,
        claims=[Claim(p + "ip/3", b"a")],
        releases=[Guard(held.key, held.mod_revision)],
    )
    assert moved.create_revision == a.create_revision
    with pytest.raises(NotFound):
        await kv.get(held.key)
    taken = await kv.get(p + "ip/3")
    assert taken.mod_revision == moved.mod_revision
    await kv.create(p + "obj/c", b"c1", claims=[Claim(held.key, b"c")])  # free again

    with pytest.raises(PreconditionFailed):
        await kv.delete(moved.key, expected_revision=moved.mod_revision, releases=[Guard(taken.key, 1)])
    await kv.get(moved.key)
    revision = await kv.delete(
        moved.key, expected_revision=moved.mod_revision, releases=[Guard(taken.key, taken.mod_revision)]
    )
    with pytest.raises(NotFound):
        await kv.get(taken.key)
    assert revision > moved.mod_revision


async def test_a_watch_sees_every_key_of_a_transaction_at_one_revision(kv: Subject, p: str) -> None:
    start = await kv.current_revision()
    a = await kv.create(p + "obj/a", b"a1", claims=[Claim(p + "ip/1", b"a"), Claim(p + "ip/2", b"a")])
    seen = await events(kv, p, start, count=3)
    assert sorted(e.item.key for e in seen) == [p + "ip/1", p + "ip/2", p + "obj/a"]
    assert {e.item.mod_revision for e in seen} == {a.mod_revision}


# -- list ----------------------------------------------------------------------------------------


async def test_list_reads_the_prefix_in_key_order(kv: Subject, p: str) -> None:
    names = ["b", "a/x", "B", "a", "b0", "a0", "é"]
    for name in names:
        await kv.create(p + name, name.encode())
    await kv.create(p.rstrip("/") + "-sibling", b"not under the prefix")
    page = await kv.list(p)
    assert [i.key for i in page.items] == sorted((p + n for n in names), key=str.encode)
    assert page.items == [await kv.get(i.key) for i in page.items]
    assert page.revision == await kv.current_revision() and not page.more
    assert [i.key for i in (await kv.list(p + "a")).items] == [p + "a", p + "a/x", p + "a0"]
    assert (await kv.list(p + "zzz")).items == []


async def test_list_pages_with_start_and_limit_at_one_revision(kv: Subject, p: str) -> None:
    for i in range(7):
        await kv.create(f"{p}k{i}", b"%d" % i)
    first = await kv.list(p, limit=3)
    assert [i.key for i in first.items] == [f"{p}k{i}" for i in range(3)] and first.more
    # Writes between pages do not show in later pages read at the first page's revision.
    await kv.create(p + "k3a", b"late")
    await kv.delete(p + "k5", expected_revision=(await kv.get(p + "k5")).mod_revision)
    keys, page = [i.key for i in first.items], first
    while page.more:
        page = await kv.list(p, start=page.items[-1].key + "\0", limit=3, revision=first.revision)
        assert page.revision == first.revision
        keys += [i.key for i in page.items]
    assert keys == [f"{p}k{i}" for i in range(7)]
    exact = await kv.list(p, limit=7, revision=first.revision)
    assert len(exact.items) == 7 and not exact.more  # `more` only when keys follow
    assert [i.key for i in (await kv.list(p, start=p + "k4")).items] == [p + "k4", p + "k6"]  # inclusive
    assert (await kv.list(p, start=p + "zz")).items == []
    # A start before the prefix reads from the prefix, never keys outside it.
    await kv.create(p.rstrip("/") + "+before", b"outside")
    below = await kv.list(p, start=p.rstrip("/"), limit=2)
    assert [i.key for i in below.items] == [p + "k0", p + "k1"]


async def test_list_at_an_old_revision_reads_the_state_then(kv: Subject, p: str) -> None:
    a = await kv.create(p + "a", b"a1")
    b = await kv.create(p + "b", b"b1")
    then = await kv.current_revision()
    await kv.update(p + "a", b"a2", expected_revision=a.mod_revision)
    await kv.delete(p + "b", expected_revision=b.mod_revision)
    await kv.create(p + "c", b"c1")
    old = await kv.list(p, revision=then)
    assert old.revision == then and old.items == [a, b]
    assert [(i.key, i.value) for i in (await kv.list(p)).items] == [(p + "a", b"a2"), (p + "c", b"c1")]


async def test_list_refuses_compacted_and_future_revisions(kv: Subject, p: str) -> None:
    kept = await kv.create(p + "kept", b"1")
    early = await kv.create(p + "early", b"1")
    old = early.mod_revision
    changed = await kv.update(p + "early", b"2", expected_revision=old)
    await kv.compact(changed.mod_revision)
    with pytest.raises(Compacted) as gone:
        await kv.list(p, revision=old)
    assert gone.value.revision == old
    # The compacted revision itself is kept, with keys last written long before it.
    at = await kv.list(p, revision=changed.mod_revision)
    assert at.items == [changed, kept]
    future = await kv.current_revision() + 1000
    with pytest.raises(FutureRevision) as ahead:
        await kv.list(p, revision=future)
    assert ahead.value.revision == future


# -- watch ---------------------------------------------------------------------------------------


async def test_watch_delivers_every_change_after_its_revision_once_in_order(kv: Subject, p: str) -> None:
    start = await kv.current_revision()
    a = await kv.create(p + "a", b"1")
    await kv.create(p.rstrip("/") + "-outside", b"x")  # not under the prefix: not delivered
    b = await kv.create(p + "b", b"1")
    a2 = await kv.update(p + "a", b"2", expected_revision=a.mod_revision)
    gone = await kv.delete(p + "b", expected_revision=b.mod_revision)
    c = await kv.create(p + "c", b"1")
    expected = [put(a, None), put(b, None), put(a2, b"1"), deleted(b, gone), put(c, None)]
    assert await events(kv, p, start, c.mod_revision) == expected
    # From the middle of that history: only what came after.
    assert await events(kv, p, a2.mod_revision, c.mod_revision) == expected[3:]


async def test_a_live_watch_sees_changes_made_after_it_started(kv: Subject, p: str) -> None:
    start = await kv.current_revision()
    seen: list[Event] = []

    async def watching() -> None:
        async for message in kv.watch(p, after_revision=start):
            if isinstance(message, Event):
                seen.append(message)

    task = asyncio.create_task(watching())
    try:
        item = await kv.create(p + "x", b"0")
        made = [put(item, None)]
        await wait_for(lambda: seen, within=WITHIN, what="the first event")  # the watch is live now
        for i in range(1, 6):
            prev, item = item, await kv.update(p + "x", b"%d" % i, expected_revision=item.mod_revision)
            made.append(put(item, prev.value))
        made.append(deleted(item, await kv.delete(p + "x", expected_revision=item.mod_revision)))
        await wait_for(lambda: len(seen) >= len(made), within=WITHIN, what="every event")
        assert seen == made
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_watch_from_a_compacted_revision_raises_compacted(kv: Subject, p: str) -> None:
    first = await kv.create(p + "a", b"1")
    second = await kv.update(p + "a", b"2", expected_revision=first.mod_revision)
    await kv.compact(second.mod_revision)
    with pytest.raises(Compacted):
        await events(kv, p, first.mod_revision - 1, second.mod_revision)
    # From the compacted revision on, history is still there; the state a change at exactly
    # that revision replaced is gone (as etcd keeps it), the state later ones replaced is not.
    third = await kv.update(p + "a", b"3", expected_revision=second.mod_revision)
    after = await events(kv, p, second.mod_revision - 1, third.mod_revision)
    assert after == [put(second, None), put(third, b"2")]


async def test_a_quiet_watch_reports_progress(kv: Subject, p: str) -> None:
    start = await kv.current_revision()
    elsewhere = await kv.create(p.rstrip("/") + "-elsewhere", b"x")  # a write outside the prefix
    async with asyncio.timeout(WITHIN), watching(kv, p, start) as stream:
        async for message in stream:
            assert isinstance(message, Progress), f"{message}: nothing changed under {p}"
            if message.revision >= elsewhere.mod_revision:
                break


# -- leases --------------------------------------------------------------------------------------


async def test_a_key_bound_to_a_lease_goes_when_the_lease_is_revoked(kv: Subject, p: str) -> None:
    lease = await kv.grant(30)
    assert await kv.keep_alive(lease) == 30
    await kv.create(p + "a", b"1", lease=lease)
    await kv.create(p + "b", b"2")
    await kv.revoke(lease)
    with pytest.raises(NotFound):
        await kv.get(p + "a")
    assert (await kv.get(p + "b")).value == b"2"
    with pytest.raises(LeaseExpired):
        await kv.keep_alive(lease)
    with pytest.raises(LeaseExpired):
        await kv.create(p + "c", b"3", lease=lease)
    b = await kv.get(p + "b")
    with pytest.raises(LeaseExpired):
        await kv.update(p + "b", b"3", expected_revision=b.mod_revision, lease=lease)
    assert await kv.get(p + "b") == b
    await kv.revoke(lease)  # revoking twice is fine
    # Only a write that would happen needs its lease: the key's own state is checked first.
    with pytest.raises(AlreadyExists):
        await kv.create(p + "b", b"3", lease=lease)
    with pytest.raises(Conflict):
        await kv.update(p + "b", b"3", expected_revision=b.mod_revision - 1, lease=lease)


async def test_a_lease_not_kept_alive_expires_and_a_watch_sees_its_keys_go(kv: Subject, p: str) -> None:
    lease = await kv.grant(2)
    assert await kv.keep_alive(lease) >= 2  # a store may lengthen a short TTL, never shorten it
    item = await kv.create(p + "x", b"1", lease=lease)
    # Nothing but the watch runs meanwhile: the lease runs out by itself.
    [gone] = await events(kv, p, item.mod_revision, count=1)
    assert gone.type is EventType.DELETE and gone.item.key == item.key and gone.prev_value == b"1"
    with pytest.raises(NotFound):
        await kv.get(p + "x")
    with pytest.raises(LeaseExpired):
        await kv.keep_alive(lease)


async def test_writing_a_key_without_its_lease_unbinds_it(kv: Subject, p: str) -> None:
    lease = await kv.grant(30)
    a = await kv.create(p + "a", b"1", lease=lease)
    await kv.create(p + "b", b"1", lease=lease)
    other = await kv.grant(30)
    b = await kv.get(p + "b")
    await kv.update(p + "b", b"2", expected_revision=b.mod_revision, lease=other)  # moved to another lease
    unbound = await kv.update(p + "a", b"2", expected_revision=a.mod_revision)
    await kv.revoke(lease)
    assert await kv.get(p + "a") == unbound
    assert (await kv.get(p + "b")).value == b"2"
    await kv.revoke(other)
    with pytest.raises(NotFound):
        await kv.get(p + "b")
