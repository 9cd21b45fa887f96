"""The stand-in's storage, as etcd is kube-apiserver's: every object of every resource, one
resource version counter for all of them (every write takes the next number, like an etcd
revision), and a bounded history of changes that watches replay from a resource version. A
watch asking for a version older than the history holds gets 410 Expired, as from a real server
after etcd compaction. Runs on one event loop: no locks."""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.support.kube.catalog import Resource

Object = dict[str, Any]


@dataclass(frozen=True)
class Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: Resource
    obj: Object
    old: Object | None


@dataclass(eq=False)
class Watcher:
    """One watch: the changes of one resource, queued for its stream. A watcher that falls too
    far behind is cut off (its stream ends; the client resumes from its last version)."""

    resource: Resource
    queue: asyncio.Queue[Change] = field(default_factory=lambda: asyncio.Queue(maxsize=2000))
    overflowed: bool = False

    def offer(self, change: Change) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True


class Store:
    def __init__(self, history: int = 5000) -> None:
        self.rv = 0
        self.objects: dict[Resource, dict[tuple[str, str], Object]] = {}
        self.history: deque[Change] = deque(maxlen=history)
        # The newest version no longer in the history (0: nothing dropped yet).
        self.compacted = 0
        self.watchers: set[Watcher] = set()

    def _of(self, resource: Resource) -> dict[tuple[str, str], Object]:
        return self.objects.setdefault(resource, {})

    def get(self, resource: Resource, namespace: str, name: str) -> Object | None:
        return self._of(resource).get((namespace, name))

    def items(self, resource: Resource, namespace: str = "") -> list[Object]:
        """Objects in key order (namespace, then name), as etcd lists them."""
        table = self._of(resource)
        return [table[k] for k in sorted(table) if not namespace or k[0] == namespace]

    def all_items(self) -> Iterator[tuple[Resource, Object]]:
        for resource, table in list(self.objects.items()):
            for obj in list(table.values()):
                yield resource, obj

    def find(self, uid: str) -> tuple[Resource, Object] | None:
        for resource, obj in self.all_items():
            if obj["metadata"].get("uid") == uid:
                return resource, obj
        return None

    def _commit(self, kind: str, resource: Resource, obj: Object, old: Object | None) -> Object:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if len(self.history) == self.history.maxlen:
            self.compacted = self.history[0].rv
        change = Change(self.rv, kind, resource, copy.deepcopy(obj), old)
        self.history.append(change)
        for w in list(self.watchers):
            if w.resource is resource:
                w.offer(change)
        return obj

    def put(self, resource: Resource, obj: Object) -> Object:
        """Store a new or changed object at the next resource version."""
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        old = self._of(resource).get(key)
        self._of(resource)[key] = obj
        return self._commit("MODIFIED" if old else "ADDED", resource, obj, copy.deepcopy(old) if old else None)

    def remove(self, resource: Resource, obj: Object) -> Object:
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        old = self._of(resource).pop(key)
        gone = copy.deepcopy(old)
        return self._commit("DELETED", resource, gone, old)

    def since(self, rv: int, resource: Resource) -> list[Change] | None:
        """The changes of `resource` after `rv`, or None when the history no longer reaches back
        that far."""
        if rv < self.compacted:
            return None
        return [c for c in self.history if c.rv > rv and c.resource is resource]

    def subscribe(self, resource: Resource) -> Watcher:
        w = Watcher(resource)
        self.watchers.add(w)
        return w

    def unsubscribe(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
