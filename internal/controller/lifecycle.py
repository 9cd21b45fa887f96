"""The lifecycle every provider-managed object goes through, shared by the cluster and the
machine controller:

  (no finalizer) -> add finalizer
  create plan    -> phase Initializing until every create step succeeded, then Running
  upgrade plan   -> phase Upgrading while the adapter says the version must change
  scale plan     -> phase Scaling after any other spec change (generation moved on)
  health         -> Running objects are checked every `health_interval` (Healthy condition);
                    a provider with `converge(ctx)` first brings what it made up to date
                    with what it renders now (event Converged when it changed anything)
  delete plan    -> with deletion_timestamp set: phase Terminating, the adapter's own steps
                    first (a cluster deletes its machines), then the provider's, then the
                    finalizer goes and the apiserver removes the object. A deletion seen
                    while a create, upgrade or scale step runs cancels that step (`abort`):
                    its condition says Cancelled and the delete plan starts at once
  Failed         -> a permanent error or spent retries; nothing more runs until the spec
                    changes (generation), which gives the failed step a fresh retry budget.
                    Deletion always proceeds.

Entering Upgrading or Scaling resets that plan's conditions, so each upgrade or scale runs
its steps again; a controller restarted in the middle finds the phase set and resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from tke.internal.controller import progress
from tke.internal.controller.cache import object_key
from tke.internal.controller.client import ResourceClient
from tke.internal.controller.events import NORMAL, WARNING, Recorder
from tke.internal.controller.runner import Abort, Runner, now
from tke.internal.controller.status import StatusWriter
from tke.internal.meta.resource import Resource
from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.steps import Step

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class Phases:
    initializing: int
    running: int
    failed: int
    terminating: int
    upgrading: int | None = None
    scaling: int | None = None


class Adapter(Protocol):
    """What differs between clusters and machines."""

    def context(self, obj: Any) -> Any: ...

    def gate(self, obj: Any) -> str | None:
        """Why the create plan cannot start yet (machines wait for their cluster), or None."""
        ...

    def needs_upgrade(self, obj: Any) -> bool: ...

    def on_created(self, obj: Any) -> None:
        """Status fields to set when the create plan completes (version, ...)."""
        ...

    def on_upgraded(self, obj: Any) -> None: ...

    def pre_delete_steps(self) -> Sequence[Step[Any]]: ...

    def upgrade_plan(self, steps: Sequence[Step[Any]]) -> Sequence[Step[Any]]:
        """The provider's upgrade steps, with the controller's own around them (machines take
        their cluster's upgrade slot first and give it back last)."""
        ...


class Lifecycle(Generic[R]):
    def __init__(
        self,
        kind: str,
        finalizer: str,
        phases: Phases,
        *,
        client: ResourceClient[R],
        writer: StatusWriter[R],
        runner: Runner[Any],
        recorder: Recorder,
        health_interval: float,
    ) -> None:
        self.kind = kind
        self.finalizer = finalizer
        self.phases = phases
        self.client = client
        self.writer = writer
        self.runner = runner
        self.recorder = recorder
        self.health_interval = health_interval
        self._checked: dict[str, float] = {}  # object uid -> when its health was last checked
        # The Abort of each object whose create, upgrade or scale reconcile runs, by key.
        self._aborts: dict[str, Abort] = {}

    async def _set_phase(self, obj: R, phase: int, reason: str, message: str, *, changed_status: bool = False) -> R:
        """Write the phase when it changes, or when `changed_status` says other status fields did."""
        status: Any = obj.status
        if status.phase == phase and status.reason == reason and status.message == message and not changed_status:
            return obj
        changed = status.phase != phase
        status.phase, status.reason, status.message = phase, reason, message
        written = await self.writer(obj)
        if changed:
            name = type(status).DESCRIPTOR.fields_by_name["phase"].enum_type.values_by_number[phase].name
            self.recorder.record(written, self.kind, NORMAL, "PhaseChanged", f"phase {name}: {message or reason}")
        return written

    def abort(self, key: str, why: str) -> None:
        """The object at `key` is being deleted (or is gone): cancel the create, upgrade or
        scale step its reconcile runs, if one does, so that the delete starts now."""
        abort = self._aborts.get(key)
        if abort is not None:
            abort.request(why)

    async def reconcile(self, obj: R, provider: Any, adapter: Adapter) -> float | None:
        self.writer.observe(obj)
        if obj.metadata.HasField("deletion_timestamp"):
            return await self._delete(obj, provider, adapter)
        # Registered before the first await: a deletion seen from here on is this reconcile's
        # to stop (the informer's handler calls `abort`); the queue runs no other reconcile of
        # the key meanwhile, and the delete runs when this one has returned.
        key = object_key(obj)
        abort = self._aborts[key] = Abort()
        try:
            return await self._reconcile(obj, provider, adapter, abort)
        finally:
            if self._aborts.get(key) is abort:
                del self._aborts[key]

    async def _reconcile(self, obj: R, provider: Any, adapter: Adapter, abort: Abort) -> float | None:
        meta = obj.metadata
        status: Any = obj.status
        p = self.phases
        if self.finalizer not in meta.finalizers:
            meta.finalizers.append(self.finalizer)
            obj = await self.client.update(obj)
            self.writer.observe(obj)
            status = obj.status
        create = [s.name for s in provider.create_steps]
        if status.phase == p.failed and status.reason == "Unhealthy":
            return await self._health(obj, provider, adapter)
        if status.phase == p.failed:
            if status.observed_generation == obj.metadata.generation:
                return None  # stays Failed until the spec changes
            upgrade = adapter.upgrade_plan(provider.upgrade_steps)
            all_steps = [*provider.create_steps, *upgrade, *provider.scale_steps]
            reset = progress.reset(status.conditions, [s.name for s in all_steps], now())
            status.observed_generation = obj.metadata.generation
            obj = await self._set_phase(obj, p.initializing, "Retrying", f"spec changed; retrying {', '.join(reset)}")
            status = obj.status
        if progress.next_step(create, status.conditions) is not None:
            # The object may not be ready for its create steps (a machine's cluster is not
            # Running; a provider waits for something in the spec): wait, without spending retries.
            waiting = adapter.gate(obj)
            if waiting is None and hasattr(provider, "waiting_for"):
                waiting = provider.waiting_for(obj)
            if waiting is not None:
                await self._set_phase(obj, p.initializing, "Waiting", waiting)
                return 5.0
            if status.phase != p.initializing or status.reason == "Waiting":
                obj = await self._set_phase(obj, p.initializing, "Creating", "running the create steps")
            ctx: Any = adapter.context(obj)
            result = await self.runner.run(ctx, provider.create_steps, self.writer, abort=abort)
            if result.aborted:
                return 0.0  # the delete, at once
            if not result.done:
                return result.requeue_after
            obj = ctx.obj
            adapter.on_created(obj)
            status = obj.status
            status.observed_generation = obj.metadata.generation
            progress.set_condition(status.conditions, "Ready", ok=True, reason="Created", message="", now=now())
            return await self._running(obj, "Created")
        return await self._update(obj, provider, adapter, abort)

    async def _update(self, obj: R, provider: Any, adapter: Adapter, abort: Abort) -> float | None:
        p = self.phases
        status: Any = obj.status
        generation = obj.metadata.generation
        # The reason tells an upgrade in progress from another use of the same phase (machines
        # have no phase of their own for it).
        in_upgrade = status.phase == p.upgrading and status.reason == "Upgrading"
        upgrading = bool(provider.upgrade_steps) and (
            in_upgrade or (status.phase == p.running and adapter.needs_upgrade(obj))
        )
        if upgrading and p.upgrading is not None:
            plan = adapter.upgrade_plan(provider.upgrade_steps)
            if not in_upgrade:
                progress.reset_plan(status.conditions, [s.name for s in plan])
                obj = await self._set_phase(obj, p.upgrading, "Upgrading", "running the upgrade steps")
            ctx: Any = adapter.context(obj)
            result = await self.runner.run(ctx, plan, self.writer, abort=abort)
            if result.aborted:
                return 0.0
            if not result.done:
                return result.requeue_after
            obj = ctx.obj
            adapter.on_upgraded(obj)
            return await self._running(obj, "Upgraded")
        in_scale = status.phase == p.scaling and status.reason == "Scaling"
        scaling = in_scale or status.observed_generation != generation
        if scaling and p.scaling is not None and provider.scale_steps:
            if not in_scale:
                progress.reset_plan(status.conditions, [s.name for s in provider.scale_steps])
                obj = await self._set_phase(obj, p.scaling, "Scaling", "running the scale steps")
            ctx = adapter.context(obj)
            result = await self.runner.run(ctx, provider.scale_steps, self.writer, abort=abort)
            if result.aborted:
                return 0.0
            if not result.done:
                return result.requeue_after
            return await self._running(ctx.obj, "Scaled")
        if status.observed_generation != generation:
            return await self._running(obj, "Reconciled")
        return await self._health(obj, provider, adapter)

    async def _running(self, obj: R, reason: str) -> float:
        status: Any = obj.status
        status.observed_generation = obj.metadata.generation
        await self._set_phase(obj, self.phases.running, reason, "")
        return self.health_interval

    async def _health(self, obj: R, provider: Any, adapter: Adapter) -> float:
        status: Any = obj.status
        p = self.phases
        # Every watch event about the object lands here; check at most twice an interval.
        key = obj.metadata.uid
        since = time.monotonic() - self._checked.get(key, -1e9)
        if since < self.health_interval / 2:
            return self.health_interval - since
        self._checked[key] = time.monotonic()
        before = progress.find(status.conditions, "Healthy")
        was_ok = before is None or before.status == progress.TRUE
        seen = (before.status, before.message) if before is not None else None
        # A health check may report what it saw in status (an imported cluster's nodes): the
        # status is written when that, or the Healthy condition's verdict or message, changed.
        snapshot = status.SerializeToString(deterministic=True)
        try:
            ctx: Any = adapter.context(obj)
            if hasattr(provider, "converge"):
                # A provider whose objects should stay as it renders them (hosted control planes)
                # applies them again here when its rendering changed; it says what it did.
                done = await provider.converge(ctx)
                if done:
                    self.recorder.record(obj, self.kind, NORMAL, "Converged", done)
            message = await provider.check_health(ctx)
            ok = True
        except TemporaryError as err:
            message, ok = str(err), False
        except Exception as err:
            message, ok = f"{type(err).__name__}: {err}", False
        message = progress.reported(message)
        changed = status.SerializeToString(deterministic=True) != snapshot
        progress.set_condition(
            status.conditions, "Healthy", ok=ok, reason="Healthy" if ok else "Unhealthy", message=message, now=now()
        )
        after = progress.find(status.conditions, "Healthy")
        changed = changed or after is None or seen != (after.status, after.message)
        if ok != was_ok:
            kind = NORMAL if ok else WARNING
            self.recorder.record(obj, self.kind, kind, "Healthy" if ok else "Unhealthy", message)
        if ok:
            await self._set_phase(obj, p.running, "Healthy", "", changed_status=changed)
        else:
            # Unhealthy is not a step failure: keep checking, Running again when it recovers.
            await self._set_phase(obj, p.failed, "Unhealthy", message, changed_status=changed)
            return min(self.health_interval, 10.0)
        return self.health_interval

    async def _delete(self, obj: R, provider: Any, adapter: Adapter) -> float | None:
        meta = obj.metadata
        if self.finalizer not in meta.finalizers:
            return None
        p = self.phases
        status: Any = obj.status
        if provider is not None:
            steps = [*adapter.pre_delete_steps(), *provider.delete_steps]
            if progress.failed_step(status.conditions, [s.name for s in steps]) is not None:
                return None  # teardown failed for good: the finalizer stays for an operator to look
            if status.phase != p.terminating:
                obj = await self._set_phase(obj, p.terminating, "Deleting", "running the delete steps")
            ctx: Any = adapter.context(obj)
            result = await self.runner.run(ctx, steps, self.writer)
            if not result.done:
                return result.requeue_after
            obj = ctx.obj
        # Only our finalizer goes; the update is a CAS on the revision just read.
        latest = await self.client.get(obj.metadata.tenant_id, obj.metadata.name)
        others = [f for f in latest.metadata.finalizers if f != self.finalizer]
        latest.metadata.ClearField("finalizers")
        latest.metadata.finalizers.extend(others)
        await self.client.update(latest)
        self.recorder.record(obj, self.kind, NORMAL, "Deleted", "teardown finished; finalizer removed")
        self.writer.forget(f"{obj.metadata.tenant_id}/{obj.metadata.name}")
        self._checked.pop(obj.metadata.uid, None)
        return None
