"""The informer's local cache: objects by "tenant/name", plus secondary indexes (machines by
"tenant/cluster"). Plain data, no I/O; one event loop, no locks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from tke.internal.meta.resource import Resource

R = TypeVar("R", bound=Resource)

IndexFunc = Callable[[R], Iterable[str]]


def object_key(obj: Resource) -> str:
    """The cache and work-queue key of an object: "tenant/name"."""
    return f"{obj.metadata.tenant_id}/{obj.metadata.name}"


def split_key(key: str) -> tuple[str, str]:
    tenant, _, name = key.partition("/")
    return tenant, name


def by_cluster(machine: Resource) -> list[str]:
    """Index of machines by "tenant/cluster_name"."""
    return [f"{machine.metadata.tenant_id}/{machine.spec.cluster_name}"]  # type: ignore[attr-defined]


class Cache(Generic[R]):
    def __init__(self, indexers: dict[str, IndexFunc[R]] | None = None) -> None:
        self._items: dict[str, R] = {}
        self._indexers = dict(indexers or {})
        self._indexes: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    def get(self, key: str) -> R | None:
        return self._items.get(key)

    def all_keys(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[R]:
        return list(self._items.values())

    def by_index(self, index: str, value: str) -> list[R]:
        return [self._items[k] for k in sorted(self._indexes[index].get(value, ()))]

    def put(self, obj: R) -> R | None:
        """Store `obj`; returns what it replaced."""
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name, func in self._indexers.items():
            for value in func(obj):
                self._indexes[name].setdefault(value, set()).add(key)
        return old

    def remove(self, key: str) -> R | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: str, obj: R) -> None:
        for name, func in self._indexers.items():
            for value in func(obj):
                keys = self._indexes[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indexes[name][value]
