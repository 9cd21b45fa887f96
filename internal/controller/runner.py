"""Runs a plan (an ordered list of steps) on one object, recording progress in its
status.conditions through a status writer, so that a controller that stops anywhere resumes
at the first unfinished step.

For each step: mark it Running and write the status (this write is also the fence: it is a
CAS on the object's resource_version, so a controller working from a stale copy stops here),
run it with its timeout, then record Succeeded, or Retrying with the retry count, last error
and delay, or Failed when the error is permanent or the retries are spent. The phase is the
caller's business, except Failed, which the runner sets with the reason and message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf import timestamp_pb2

from tke.internal.controller import progress
from tke.internal.controller.events import NORMAL, WARNING, Recorder
from tke.internal.controller.progress import RetryPolicy
from tke.internal.meta.resource import Resource
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.steps import Step

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Resource)


class HasObject(Protocol[R]):
    obj: R


C = TypeVar("C", bound=HasObject[Any])


@dataclass(frozen=True)
class PlanResult:
    done: bool = False
    failed: bool = False
    # Run the object again after this many seconds (a temporary failure's delay).
    requeue_after: float | None = None
    # The plan was stopped by its Abort (the object is being deleted).
    aborted: bool = False


class StepAborted(Exception):
    """The step running under an Abort was cancelled by it."""


class Abort:
    """How a reconcile that runs a create, upgrade or scale plan is told that its object is
    being deleted: `request(why)` cancels the step running under it (its SSH command, its
    cloud call) at once, and the runner starts no further step. The cancellation is the
    step's alone: it ends as StepAborted, a controller stopping meanwhile still stops (its
    own cancellation goes on), and a step that swallowed the cancellation keeps its result.
    Made and requested in the controller's event loop."""

    def __init__(self) -> None:
        self.why: str | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    def request(self, why: str) -> None:
        if self.why is None:
            self.why = why
        if self._task is not None and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    async def __aenter__(self) -> Abort:
        if self.why is not None:
            raise StepAborted(self.why)
        self._task = asyncio.current_task()
        self._cancelled = False
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        task, self._task = self._task, None
        if not self._cancelled or task is None:
            return
        self._cancelled = False
        # Only our own cancellation becomes StepAborted: another one (the controller stops)
        # is left pending, and the CancelledError goes on.
        if task.uncancel() == 0 and exc_type is asyncio.CancelledError:
            raise StepAborted(self.why or "cancelled")


def now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


StatusWriter = Callable[[R], Awaitable[R]]


class Runner(Generic[C]):
    def __init__(
        self,
        kind: str,
        recorder: Recorder,
        policy: RetryPolicy,
        failed_phase: int,
        clock: Callable[[], timestamp_pb2.Timestamp] = now,
    ) -> None:
        self.kind = kind
        self.recorder = recorder
        self.policy = policy
        self.failed_phase = failed_phase
        self.clock = clock
        # When each failed step may run again, by (object uid, step): a watch event about the
        # failure itself must not start the next attempt early. Kept in memory: a restarted
        # controller may retry once sooner, which the retry budget bounds.
        self._not_before: dict[tuple[str, str], float] = {}

    async def run(
        self,
        ctx: C,
        steps: Sequence[Step[C]],
        write: StatusWriter[Any],
        *,
        per_generation: bool = False,
        abort: Abort | None = None,
    ) -> PlanResult:
        """Run the plan's unfinished steps in order. With `abort`, a request cancels the step
        running (its condition then says Cancelled, with why) and no other step starts."""
        by_name = {s.name: s for s in steps}
        names = [s.name for s in steps]
        while True:
            obj = ctx.obj
            generation = obj.metadata.generation
            name = progress.next_step(names, obj.status.conditions, generation if per_generation else None)
            if name is None:
                return PlanResult(done=True)
            if abort is not None and abort.why is not None:
                log.info("%s %s: stopped before step %s: %s", self.kind, _key(obj), name, abort.why)
                return PlanResult(aborted=True)
            step = by_name[name]
            wait_key = (obj.metadata.uid, name)
            wait = self._not_before.get(wait_key, 0.0) - time.monotonic()
            if wait > 0:
                return PlanResult(requeue_after=wait)
            self._not_before.pop(wait_key, None)
            progress.start(obj.status.conditions, name, generation, self.clock())
            ctx.obj = await write(obj)
            try:
                error, permanent, delay = await self._attempt(step, ctx, abort)
            except StepAborted as err:
                return await self._aborted(ctx, name, str(err), write)
            obj = ctx.obj
            if error is None:
                progress.succeed(obj.status.conditions, name, generation, self.clock(), step.description)
                ctx.obj = await write(obj)
                self.recorder.record(ctx.obj, self.kind, NORMAL, "StepSucceeded", f"step {name} succeeded")
                continue
            policy = self.policy
            if step.max_retries is not None:
                policy = RetryPolicy(step.max_retries, policy.base_delay, policy.max_delay)
            outcome = progress.fail(
                obj.status.conditions, name, error, self.clock(), policy, permanent=permanent, delay=delay
            )
            if outcome.give_up:
                obj.status.phase = self.failed_phase
                obj.status.reason = "StepFailed"
                obj.status.message = f"step {name} failed: {error}"[:2048]
                obj.status.observed_generation = generation
            ctx.obj = await write(obj)
            if outcome.give_up:
                self.recorder.record(ctx.obj, self.kind, WARNING, "StepFailed", f"step {name} failed: {error}")
                return PlanResult(failed=True)
            self._not_before[wait_key] = time.monotonic() + outcome.delay
            self.recorder.record(
                ctx.obj,
                self.kind,
                WARNING,
                "StepRetrying",
                # No attempt number or delay in the text: repeats of one failure count up one
                # event instead of adding one per attempt (the condition has the numbers).
                f"step {name} failed, will retry: {error}",
            )
            return PlanResult(requeue_after=outcome.delay)

    async def _aborted(self, ctx: C, name: str, why: str, write: StatusWriter[Any]) -> PlanResult:
        """The step `name` was cancelled by its Abort: one line in the log, its condition and an
        event say so; the attempt is not counted as a failure."""
        obj = ctx.obj
        message = f"step {name} cancelled: {why}"
        log.info("%s %s: %s", self.kind, _key(obj), message)
        progress.cancel(obj.status.conditions, name, message, self.clock())
        ctx.obj = await write(obj)
        self.recorder.record(ctx.obj, self.kind, NORMAL, "StepCancelled", message)
        return PlanResult(aborted=True)

    async def _attempt(
        self, step: Step[C], ctx: C, abort: Abort | None = None
    ) -> tuple[str | None, bool, float | None]:
        """Run one attempt: (error or None, permanent, delay), the error's text as conditions
        and events may show it (progress.reported). StepAborted when `abort` cancelled it."""
        error, permanent, delay = await self._attempt_raw(step, ctx, abort)
        return (None if error is None else progress.reported(error)), permanent, delay

    async def _attempt_raw(self, step: Step[C], ctx: C, abort: Abort | None) -> tuple[str | None, bool, float | None]:
        try:
            # The step runs in the caller's task, not in one of wait_for's: Python 3.11's
            # wait_for returns the step's result when the caller is cancelled in the loop turn
            # the step finishes in, and the cancellation is lost (a stopping controller's
            # worker went on to the next step, and then to the next key).
            async with asyncio.timeout(step.timeout):
                if abort is None:
                    await step.run(ctx)
                else:
                    async with abort:
                        await step.run(ctx)
        except StepAborted:
            raise
        except PermanentError as err:
            return str(err) or type(err).__name__, True, None
        except TemporaryError as err:
            return str(err) or type(err).__name__, False, err.delay
        except TimeoutError:
            return f"timed out after {step.timeout:.0f}s", False, None
        except Exception as err:
            # Unknown failures are retried (bounded); the log keeps the traceback, the
            # condition only the message.
            log.exception("%s %s: step %s raised", self.kind, ctx.obj.metadata.name, step.name)
            return f"{type(err).__name__}: {err}", False, None
        return None, False, None


def _key(obj: Any) -> str:
    return f"{obj.metadata.tenant_id}/{obj.metadata.name}"
