"""The events recorder: controllers say what they did and why, through the EventService.

`record` never blocks and never fails the caller: events go through a bounded queue to a
background task, and an apiserver that cannot take them loses them (logged), as in
Kubernetes. A repeat of the same (object, type, reason, message) updates the existing event's
count and last_timestamp instead of creating another: the event's name is derived from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from dataclasses import dataclass
from typing import Protocol

import grpc

from tke.internal.controller.client import ApiClient, code_of
from tke.internal.meta.resource import Resource
from tke.internal.tasks import cancel_and_wait
from tke.platform.v1 import event_pb2

log = logging.getLogger(__name__)

NORMAL = event_pb2.EVENT_TYPE_NORMAL
WARNING = event_pb2.EVENT_TYPE_WARNING


@dataclass(frozen=True)
class Record:
    kind: str
    tenant: str
    name: str
    uid: str
    resource_version: str
    type: int
    reason: str
    message: str


class Recorder(Protocol):
    def record(self, obj: Resource, kind: str, type: int, reason: str, message: str) -> None: ...


def make_record(obj: Resource, kind: str, type: int, reason: str, message: str) -> Record:
    meta = obj.metadata
    return Record(kind, meta.tenant_id, meta.name, meta.uid, meta.resource_version, type, reason, message[:4096])


def event_name(record: Record) -> str:
    """A DNS-1123 label naming what happened to which object: repeats share it."""
    digest = hashlib.sha256(
        "\0".join([record.kind, record.uid, str(record.type), record.reason, record.message]).encode()
    ).hexdigest()
    return f"{record.name[:46].rstrip('-')}-{digest[:16]}"


class MemoryRecorder:
    """The fake: keeps what was recorded."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def record(self, obj: Resource, kind: str, type: int, reason: str, message: str) -> None:
        self.records.append(make_record(obj, kind, type, reason, message))

    def reasons(self, name: str | None = None) -> list[str]:
        return [r.reason for r in self.records if name is None or r.name == name]


class ApiRecorder:
    def __init__(self, client: ApiClient[event_pb2.Event], component: str, *, queue_size: int = 1000) -> None:
        self.client = client
        self.component = component
        self.host = socket.gethostname()
        self._queue: asyncio.Queue[Record] = asyncio.Queue(queue_size)
        self._known: dict[str, event_pb2.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, grace: float = 2.0) -> None:
        """Send what is queued (within `grace` seconds), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._queue.join()
        await cancel_and_wait(self._task)

    def record(self, obj: Resource, kind: str, type: int, reason: str, message: str) -> None:
        level = logging.WARNING if type == WARNING else logging.INFO
        log.log(level, "%s %s/%s: %s: %s", kind, obj.metadata.tenant_id, obj.metadata.name, reason, message)
        try:
            self._queue.put_nowait(make_record(obj, kind, type, reason, message))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            record = await self._queue.get()
            try:
                await self._send(record)
            except grpc.aio.AioRpcError as err:
                log.warning(
                    "event %s of %s/%s not recorded: %s", record.reason, record.kind, record.name, err.details()
                )
            except Exception:
                log.exception("event %s not recorded", record.reason)
            finally:
                self._queue.task_done()

    async def _send(self, record: Record) -> None:
        if len(self._known) > 10_000:
            self._known.clear()  # a cache of what we wrote, not a record: re-read on demand
        name = event_name(record)
        key = f"{record.tenant}/{name}"
        now = event_pb2.Event().spec.last_timestamp
        now.GetCurrentTime()
        for _ in range(3):
            known = self._known.get(key)
            if known is None:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    known = await self.client.get(record.tenant, name)
            if known is None:
                event = event_pb2.Event()
                event.metadata.name = name
                event.metadata.tenant_id = record.tenant
                ref = event.spec.involved_object
                ref.kind, ref.name, ref.tenant_id = record.kind, record.name, record.tenant
                ref.uid, ref.resource_version = record.uid, record.resource_version
                event.spec.reason, event.spec.message, event.spec.type = record.reason, record.message, record.type  # type: ignore[assignment]
                event.spec.count = 1
                event.spec.first_timestamp.CopyFrom(now)
                event.spec.last_timestamp.CopyFrom(now)
                event.spec.source.component, event.spec.source.host = self.component, self.host
                try:
                    self._known[key] = await self.client.create(event)
                    return
                except grpc.aio.AioRpcError as err:
                    if code_of(err) != grpc.StatusCode.ALREADY_EXISTS:
                        raise
                    continue
            update = event_pb2.Event()
            update.CopyFrom(known)
            update.spec.count += 1
            update.spec.last_timestamp.CopyFrom(now)
            try:
                self._known[key] = await self.client.update(update)
                return
            except grpc.aio.AioRpcError as err:
                # Someone else counted it (ABORTED), or it expired (NOT_FOUND): read again.
                if code_of(err) not in (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND):
                    raise
                self._known.pop(key, None)
