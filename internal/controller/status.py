"""Writing an object's status: UpdateStatus with the resource_version the controller read, so
a controller acting on a stale copy (or a deposed leader) cannot overwrite newer progress.

When only the spec or metadata moved on (a user edit) while the status on the server is still
the one this controller last saw, the new status is applied on top of the latest object:
the status is the controller's alone, so nothing is lost, and a long step's success is not
thrown away for an unrelated label change.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import grpc

from tke.internal.controller.cache import object_key
from tke.internal.controller.client import ResourceClient, code_of
from tke.internal.meta.resource import Resource

R = TypeVar("R", bound=Resource)


class StaleStatus(Exception):
    """The status on the server changed under us: start the reconcile again."""


def _status_bytes(obj: Resource) -> bytes:
    return obj.status.SerializeToString(deterministic=True)


class StatusWriter(Generic[R]):
    def __init__(self, client: ResourceClient[R]) -> None:
        self.client = client
        self._seen: dict[str, bytes] = {}

    def observe(self, obj: R) -> None:
        """Remember the status as read (the base of the next write)."""
        self._seen[object_key(obj)] = _status_bytes(obj)

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)

    async def __call__(self, obj: R) -> R:
        key = object_key(obj)
        try:
            written = await self.client.update_status(obj)
        except grpc.aio.AioRpcError as err:
            if code_of(err) != grpc.StatusCode.ABORTED:
                raise
            latest = await self.client.get(obj.metadata.tenant_id, obj.metadata.name)
            if _status_bytes(latest) != self._seen.get(key):
                raise StaleStatus(f"{key}: status changed by someone else") from None
            latest.status.CopyFrom(obj.status)
            written = await self.client.update_status(latest)
        self._seen[key] = _status_bytes(written)
        return written
