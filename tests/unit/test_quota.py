"""The bookkeeping of tenants' quotas (internal/apiserver/quota.py), change by change: what the
watch brings, what a write in flight holds, and when a hold is let go. The rules as a tenant
meets them are probed against a real apiserver in tests/security/test_tenant_quotas.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tke.internal.apiserver.quota import KindUsage, QuotaConfig, Quotas
from tke.internal.auth.identity import Identity, current_identity
from tke.internal.rpc.errors import ApiError
from tke.internal.storage.mirror import Followers
from tke.internal.storage.store import Event, EventType, Item

ROOT = "/tke/clusters/"
TENANT = Identity(user="alice", tenant_id="team-a")


def item(name: str, revision: int, size: int = 10, tenant: str = "team-a") -> Item:
    key = f"{ROOT}{tenant}/{name}"
    return Item(key, b"x" * (size - len(key)), revision, revision)


def put(i: Item) -> Event:
    return Event(EventType.PUT, i, None)


def delete(i: Item, revision: int) -> Event:
    return Event(EventType.DELETE, Item(i.key, i.value, revision, i.create_revision), i.value)


@pytest.fixture
def usage() -> Iterator[KindUsage]:
    token = current_identity.set(TENANT)
    try:
        kind = Quotas(QuotaConfig(clusters=2, bytes=1000)).kind("clusters", "cluster", ROOT)
        kind.load([], 1)
        yield kind
    finally:
        current_identity.reset(token)


def test_a_hold_counts_until_the_watch_brings_its_write(usage: KindUsage) -> None:
    hold = usage.hold("team-a", 1, 100)
    usage.done(hold, 5)  # written at 5; the watch is still at 1
    assert usage.quotas.usage("team-a") == {"clusters": 1, "bytes": 100}
    usage.apply(put(item("a", 4, 200, tenant="team-b")))  # an earlier change: the hold stays
    assert usage.quotas.usage("team-a") == {"clusters": 1, "bytes": 100}
    usage.apply(put(item("a", 5, 100)))  # the write itself: counted once, by the watch
    assert usage.quotas.usage("team-a") == {"clusters": 1, "bytes": 100}
    assert usage.quotas.usage("team-b") == {"clusters": 1, "bytes": 200}


def test_a_write_not_done_gives_its_hold_back(usage: KindUsage) -> None:
    usage.done(usage.hold("team-a", 1, 100), 0)
    assert usage.quotas.usage("team-a") == {"clusters": 0, "bytes": 0}
    assert not usage.quotas._count and not usage.quotas._bytes  # no counter for a tenant holding nothing


def test_what_a_delete_frees_is_free_before_the_watch_brings_it(usage: KindUsage) -> None:
    a, b = item("a", 2, 100), item("b", 3, 100)
    usage.apply(put(a))
    usage.apply(put(b))
    with pytest.raises(ApiError) as refused:
        usage.hold("team-a", 1, 100)
    assert "has 2 of 2 clusters" in refused.value.message
    usage.freed("team-a", 1, 100, 4)  # deleted at 4; the watch is at 3
    usage.done(usage.hold("team-a", 1, 100), 5)
    assert usage.quotas.usage("team-a") == {"clusters": 2, "bytes": 200}
    usage.apply(delete(a, 4))
    usage.apply(put(item("c", 5, 100)))
    assert usage.quotas.usage("team-a") == {"clusters": 2, "bytes": 200}


def test_a_load_replaces_what_the_kind_counted(usage: KindUsage) -> None:
    usage.apply(put(item("a", 2, 100)))
    usage.done(usage.hold("team-a", 1, 100), 3)
    usage.load([item("b", 3, 50), item("c", 3, 50, tenant="team-b")], 9)  # the watch lost its history
    assert usage.quotas.usage("team-a") == {"clusters": 1, "bytes": 50}
    assert usage.quotas.usage("team-b") == {"clusters": 1, "bytes": 50}


def test_the_platform_is_counted_but_never_refused(usage: KindUsage) -> None:
    current_identity.set(Identity(user="controller", groups=("tke:platform-admins",), tenant_id="default"))
    for revision in range(2, 6):
        usage.done(usage.hold("team-a", 1, 400), revision)
    assert usage.quotas.usage("team-a") == {"clusters": 4, "bytes": 1600}


def test_a_kind_keyed_by_name_takes_its_tenant_from_the_record_and_shares_a_range() -> None:
    """The accounts' users and API keys: one Mirror of <prefix>/auth/ feeds both kinds
    (Followers); each counts only its own keys, with the tenant `tenant_of` reads from the
    record (None: counted against no tenant), and moves with every revision of the range."""
    quotas = Quotas(QuotaConfig(users=1))

    def tenant_of(i: Item) -> str | None:
        return i.value.decode() or None

    users = quotas.kind("users", "user", "/tke/auth/users/", tenant_of)
    keys = quotas.kind("apikeys", "API key", "/tke/auth/apikeys/", tenant_of)
    both = Followers(users, keys)
    both.load(
        [
            Item("/tke/auth/apikeys/ann.1", b"team-a", 2, 2),
            Item("/tke/auth/apikeys/old.1", b"", 3, 3),  # no tenant: not counted
            Item("/tke/auth/revoked/x", b"team-a", 4, 4),  # neither kind
            Item("/tke/auth/users/ann", b"team-a", 5, 5),
        ],
        5,
    )
    assert quotas.usage("team-a") == {"users": 1, "apikeys": 1, "bytes": 54}
    both.apply(put(Item("/tke/auth/revoked/y", b"team-a", 6, 6)))
    assert (users.revision, keys.revision) == (6, 6)
    assert quotas.usage("team-a") == {"users": 1, "apikeys": 1, "bytes": 54}
    both.apply(delete(Item("/tke/auth/users/ann", b"team-a", 5, 5), 7))
    assert quotas.usage("team-a") == {"users": 0, "apikeys": 1, "bytes": 29}
    assert quotas.usage("") == {"users": 0, "apikeys": 0, "bytes": 0}
