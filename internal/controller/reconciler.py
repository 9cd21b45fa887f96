"""What the cluster and the machine controller are both made of: the kind's informer feeding a
work queue with the keys of changed objects, the providers by spec.type, a status writer, and
the provider lifecycle (lifecycle.py) with its plan runner. Each controller adds only what
differs: its adapter, the other kind it listens to, and when an object may go ahead.
"""

from __future__ import annotations

import abc
from typing import Any, Generic, TypeVar

from tke.internal.controller.cache import object_key
from tke.internal.controller.client import ResourceClient
from tke.internal.controller.events import Recorder
from tke.internal.controller.informer import Change, Informer
from tke.internal.controller.lifecycle import Lifecycle, Phases
from tke.internal.controller.progress import RetryPolicy
from tke.internal.controller.queue import WorkQueue
from tke.internal.controller.runner import Runner
from tke.internal.controller.status import StatusWriter
from tke.internal.meta.resource import Resource
from tke.internal.provider.contract import Toolbox

R = TypeVar("R", bound=Resource)
P = TypeVar("P")


class Reconciler(abc.ABC, Generic[R, P]):
    def __init__(
        self,
        client: ResourceClient[R],
        informer: Informer[R],
        *,
        finalizer: str,
        phases: Phases,
        providers: dict[str, P],
        tools: Toolbox,
        recorder: Recorder,
        policy: RetryPolicy,
        health_interval: float,
    ) -> None:
        kind = client.kind
        self.kind = kind
        self.client = client
        self.phases = phases
        self.informer = informer
        self.providers = providers
        self.tools = tools
        self.recorder = recorder
        self.queue = WorkQueue()
        self.writer = StatusWriter(client)
        runner: Runner[Any] = Runner(kind, recorder, policy, phases.failed)
        self.lifecycle: Lifecycle[R] = Lifecycle(
            kind,
            finalizer,
            phases,
            client=client,
            writer=self.writer,
            runner=runner,
            recorder=recorder,
            health_interval=health_interval,
        )
        informer.add_handler(self._changed)

    def _changed(self, change: Change, obj: R) -> None:
        key = object_key(obj)
        if change is Change.DELETED or obj.metadata.HasField("deletion_timestamp"):
            # A step of a create (or upgrade, scale) that runs now would hold the delete up to
            # its timeout (an hour for an install): it is cancelled, and the delete goes next.
            self.lifecycle.abort(key, f"the {self.kind.lower()} is being deleted")
        self.queue.add(key)

    @abc.abstractmethod
    async def reconcile(self, key: str) -> float | None:
        """Move the object at `key` on; seconds after which to look at it again, or None."""

    def working_copy(self, key: str) -> tuple[R, R] | None:
        """The cached object and a copy to work on (the cache's copy is never edited), or None
        when it is gone (its status bookkeeping goes with it)."""
        cached = self.informer.cache.get(key)
        if cached is None:
            self.writer.forget(key)
            return None
        obj = type(cached)()
        obj.CopyFrom(cached)
        return cached, obj

    async def fail_unknown_provider(self, cached: R, obj: R) -> None:
        """Failed with reason UnknownProvider: no provider serves the object's spec.type."""
        status: Any = obj.status
        spec: Any = obj.spec
        status.phase = self.phases.failed
        status.reason = "UnknownProvider"
        known = ", ".join(sorted(self.providers))
        status.message = f"no {self.kind.lower()} provider named {spec.type!r} (known: {known})"
        status.observed_generation = obj.metadata.generation
        self.writer.observe(cached)
        await self.writer(obj)
