"""What a replica remembers of the storage to save reads on the hot path: the allocations of the
container interfaces it handed out (so a Release needs no read) and each namespace's bindings
(so an Allocate needs no read). Every entry is a hint, never the truth.

Invariants:
- A hint only ever feeds a compare-and-swap: the write made from it compares the version the
  hint carries (an allocation's, or the namespace's set of bindings), so a hint another replica
  made stale costs a lost compare and a re-read, never a wrong write. Anything decided without
  a write (a release refused for another pod uid) is decided on what the storage says.
- Memory is bounded: at most `limit` entries, the least recently used forgotten first (a
  forgotten entry costs one read).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Hints(Generic[K, V]):
    """A bounded map of hints, least recently used forgotten first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, key: K, value: V) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def get(self, key: K) -> V | None:
        value = self._seen.get(key)
        if value is not None:
            self._seen.move_to_end(key)
        return value

    def take(self, key: K) -> V | None:
        """The hint, forgotten as it is handed out (it is used for one write)."""
        return self._seen.pop(key, None)

    def forget(self, key: K) -> None:
        self._seen.pop(key, None)
