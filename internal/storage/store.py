"""The storage contract: a versioned key-value store with compare-and-swap writes and watches.

Every service keeps its objects behind this Protocol; etcd is the real implementation
(`tke.internal.storage.etcd`) and `tests.support.memory_store` is a fake of the same contract
for unit tests of pure logic.

Invariants every implementation keeps:
- A revision is a store-wide, strictly increasing integer; every write gets a new one and an
  item's `mod_revision` is the revision of its last write.
- Writes are compare-and-swap: `create` only when the key is absent, `update`/`delete` only
  when the key is still at `expected_revision`. No write ever succeeds on a stale read.
- A write may carry other keys in the same transaction: guards (keys that must be at a
  revision), claims (keys that must be absent, written with the write) and releases (keys at a
  revision, deleted with the write). All apply or none; every key written shares the revision.
  Claims make unique indexes: a machine's IP is a key only one object can hold.
- A watch delivers every change after its start revision exactly once, in revision order, or
  fails with `Compacted` when that history is gone; it never skips silently.
- Errors are the types below; implementation-specific exceptions never escape.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


class StorageError(Exception):
    """Base of every storage error."""


class NotFound(StorageError):
    """The key does not exist."""


class AlreadyExists(StorageError):
    """A create found the key present."""


class Conflict(StorageError):
    """A compare-and-swap failed: the key changed since `expected_revision`."""

    def __init__(self, key: str, current: Item | None) -> None:
        super().__init__(f"{key} changed")
        self.key = key
        self.current = current


class PreconditionFailed(StorageError):
    """A guard on another key (see `Guard`) did not hold."""

    def __init__(self, guard: Guard) -> None:
        super().__init__(f"guard on {guard.key} failed")
        self.guard = guard


class Claimed(StorageError):
    """A claim's key (see `Claim`) is held already; `holder` is the key as it is."""

    def __init__(self, claim: Claim, holder: Item) -> None:
        super().__init__(f"{claim.key} is claimed already")
        self.claim = claim
        self.holder = holder


class Compacted(StorageError):
    """The requested revision is older than the store's compacted history."""

    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(f"revision {revision} is compacted (oldest kept: {compact_revision})")
        self.revision = revision
        self.compact_revision = compact_revision


class FutureRevision(StorageError):
    """The requested revision is newer than the store's latest (no reader was ever given it)."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision {revision} is newer than the store's latest")
        self.revision = revision


class NoSpace(StorageError):
    """The store is out of space (etcd's NOSPACE alarm: its --quota-backend-bytes is reached).
    Writes that add data are refused until an operator compacts and defragments etcd and
    disarms the alarm; reads and deletes still work."""


class TooLarge(StorageError):
    """A write is larger than the store accepts (etcd's --max-request-bytes, 1.5 MiB by
    default, or --max-txn-ops, 128 operations; nothing was written), or a read's answer larger
    than the client takes."""


class Unavailable(StorageError):
    """The store cannot be reached or did not answer in time; the outcome of a write is unknown
    only when `ambiguous` is true."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


@dataclass(frozen=True, slots=True)
class Item:
    """A stored value with its revisions."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True, slots=True)
class Page:
    """A page of a range read, all read at one `revision`."""

    items: list[Item]
    revision: int
    more: bool


@dataclass(frozen=True, slots=True)
class Guard:
    """A condition on another key that a write also requires: the key exists at exactly
    `mod_revision` (a write on a child object that must not outlive its parent's state)."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A key a write takes along in its transaction: it must be absent, and is written with
    `value` (who holds it). Released by a later write of the holder (a release: a Guard on it)."""

    key: str
    value: bytes


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For PUT, `item` is the new state; for DELETE, `item` is the state before the
    delete with `mod_revision` set to the delete's revision. `prev_value` is the value before
    the change: None on create, and None when that state is compacted away (a change made at
    exactly the compacted revision; a DELETE's `item` then has an empty value and
    create_revision 0)."""

    type: EventType
    item: Item
    prev_value: bytes | None


@dataclass(frozen=True, slots=True)
class Progress:
    """A watch has seen every change up to `revision` (no event of this range since)."""

    revision: int


WatchMessage = Event | Progress


class Store(Protocol):
    """A versioned key-value store. Keys are '/'-separated strings."""

    async def create(
        self,
        key: str,
        value: bytes,
        *,
        guards: Sequence[Guard] = (),
        claims: Sequence[Claim] = (),
        touches: Sequence[str] = (),
    ) -> Item:
        """Store `value` under an absent `key`, and the claims. Raises AlreadyExists,
        PreconditionFailed (a guard), Claimed. `touches`: keys the write also puts, empty and
        unconditionally, in its transaction (so their mod_revision is the write's: a record of
        when a range was last written; the same for update and delete)."""
        ...

    async def get(self, key: str) -> Item:
        """Read the current value. Raises NotFound."""
        ...

    async def list(self, prefix: str, *, start: str = "", limit: int = 0, revision: int = 0) -> Page:
        """Read keys under `prefix` in key order from `start` (inclusive; a `start` before the
        prefix reads from the prefix), at most `limit` (0: all), at `revision` (0: the latest).
        `more` says whether keys under the prefix follow the page. Raises Compacted for a
        revision older than the compacted history, FutureRevision for one newer than the latest."""
        ...

    async def update(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int,
        claims: Sequence[Claim] = (),
        releases: Sequence[Guard] = (),
        touches: Sequence[str] = (),
    ) -> Item:
        """Replace the value if the key is still at `expected_revision`, take the claims and
        delete the released keys (each at its revision); the item keeps its `create_revision`.
        Raises NotFound, Conflict (with the current item), Claimed, PreconditionFailed (a
        release)."""
        ...

    async def delete(
        self, key: str, *, expected_revision: int, releases: Sequence[Guard] = (), touches: Sequence[str] = ()
    ) -> int:
        """Remove the key if it is still at `expected_revision`, and the released keys (each at
        its revision); returns the delete's revision. Raises NotFound, Conflict (with the
        current item), PreconditionFailed (a release)."""
        ...

    async def current_revision(self) -> int:
        """The store's latest revision."""
        ...

    def watch(self, prefix: str, *, after_revision: int) -> AsyncIterator[WatchMessage]:
        """Every change under `prefix` with a revision greater than `after_revision`, in order,
        with Progress messages now and then. It resumes by itself across reconnects and
        raises Compacted when the history is gone."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
