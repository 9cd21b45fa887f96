"""Progress of steps in status.conditions: pure functions over a list of Condition messages,
no I/O and no clock of their own (the caller passes `now`).

A step's condition says where it stands:
- absent, or status UNKNOWN with reason Pending: not started in this run of its plan;
- UNKNOWN, reason Running: an attempt started (a controller that died here re-runs the step,
  which is why steps are idempotent);
- FALSE, reason Retrying: the last attempt failed temporarily; `retries`, `last_error`;
- FALSE, reason Failed: retries exhausted or a permanent error; the object is Failed;
- FALSE, reason Cancelled: the attempt was cancelled because the object is being deleted;
- TRUE, reason Succeeded: done. A step of a re-runnable plan (scale, upgrade) is done only for
  the generation it ran at (`observed_generation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from tke.internal.logs import printable
from tke.internal.rpc.errors import clip
from tke.meta.v1 import meta_pb2

TRUE = meta_pb2.CONDITION_STATUS_TRUE
FALSE = meta_pb2.CONDITION_STATUS_FALSE
UNKNOWN = meta_pb2.CONDITION_STATUS_UNKNOWN
# Characters of a failure's text kept for a condition, an event or status.message.
REPORT_CHARS = 2048

PENDING, RUNNING, RETRYING, FAILED, SUCCEEDED = "Pending", "Running", "Retrying", "Failed", "Succeeded"
CANCELLED = "Cancelled"

# status.conditions itself: add() puts a message in the list (append would copy it).
Conditions = RepeatedCompositeFieldContainer[meta_pb2.Condition]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_delay: float = 2.0
    max_delay: float = 120.0

    def delay(self, retries: int) -> float:
        """Wait before attempt number `retries` + 1 (retries >= 1)."""
        return float(min(self.max_delay, self.base_delay * 2 ** max(0, min(retries - 1, 30))))


@dataclass(frozen=True)
class Outcome:
    """What to do after a failed attempt: retry after `delay` seconds, or give up."""

    give_up: bool
    delay: float
    retries: int


def find(conditions: Sequence[meta_pb2.Condition], type_: str) -> meta_pb2.Condition | None:
    for c in conditions:
        if c.type == type_:
            return c
    return None


def _get(conditions: Conditions, type_: str) -> meta_pb2.Condition:
    c = find(conditions, type_)
    if c is None:
        c = conditions.add(type=type_, status=UNKNOWN, reason=PENDING)
    return c


def _set(c: meta_pb2.Condition, status: int, reason: str, message: str, now: timestamp_pb2.Timestamp) -> None:
    if c.status != status or not c.HasField("last_transition_time"):
        c.last_transition_time.CopyFrom(now)
    c.status = status  # type: ignore[assignment]
    c.reason = reason
    c.message = message
    c.last_probe_time.CopyFrom(now)


def is_done(conditions: Sequence[meta_pb2.Condition], name: str, generation: int | None = None) -> bool:
    c = find(conditions, name)
    if c is None or c.status != TRUE:
        return False
    return generation is None or c.observed_generation >= generation


def next_step(
    names: Sequence[str], conditions: Sequence[meta_pb2.Condition], generation: int | None = None
) -> str | None:
    """The first step of a plan not done yet (None: the plan is complete). `generation` is
    given for re-runnable plans: a step done for an older generation runs again."""
    for name in names:
        if not is_done(conditions, name, generation):
            return name
    return None


def failed_step(conditions: Sequence[meta_pb2.Condition], names: Sequence[str]) -> meta_pb2.Condition | None:
    for name in names:
        c = find(conditions, name)
        if c is not None and c.status == FALSE and c.reason == FAILED:
            return c
    return None


def start(conditions: Conditions, name: str, generation: int, now: timestamp_pb2.Timestamp) -> None:
    c = _get(conditions, name)
    _set(c, UNKNOWN, RUNNING, f"attempt {c.retries + 1} started", now)
    c.observed_generation = generation


def succeed(
    conditions: Conditions, name: str, generation: int, now: timestamp_pb2.Timestamp, message: str = ""
) -> None:
    c = _get(conditions, name)
    _set(c, TRUE, SUCCEEDED, message or "done", now)
    c.observed_generation = generation
    c.last_error = ""


def cancel(conditions: Conditions, name: str, message: str, now: timestamp_pb2.Timestamp) -> None:
    """The step's attempt was cancelled (its object is being deleted): not a failure, no retry
    spent; the step is not done, so a create that starts again runs it again."""
    _set(_get(conditions, name), FALSE, CANCELLED, message, now)


def fail(
    conditions: Conditions,
    name: str,
    error: str,
    now: timestamp_pb2.Timestamp,
    policy: RetryPolicy,
    *,
    permanent: bool,
    delay: float | None = None,
) -> Outcome:
    """Record a failed attempt; give up when permanent or when the retries are spent."""
    c = _get(conditions, name)
    c.retries += 1
    c.last_error = error[:2048]
    give_up = permanent or c.retries > policy.max_retries
    if give_up:
        why = "permanent error" if permanent else f"gave up after {c.retries} attempts"
        _set(c, FALSE, FAILED, f"{why}: {error}"[:2048], now)
        return Outcome(True, 0.0, c.retries)
    wait = delay if delay is not None else policy.delay(c.retries)
    _set(c, FALSE, RETRYING, f"attempt {c.retries} failed, retrying in {wait:.0f}s: {error}"[:2048], now)
    return Outcome(False, wait, c.retries)


def reset(conditions: Conditions, names: Sequence[str], now: timestamp_pb2.Timestamp) -> list[str]:
    """Make failed or retried steps of `names` fresh again (a spec change after Failed): their
    retry budget starts over. Returns the names reset."""
    out = []
    for name in names:
        c = find(conditions, name)
        if c is not None and c.status == FALSE:
            _set(c, UNKNOWN, PENDING, "retry budget reset by a spec change", now)
            c.retries = 0
            out.append(name)
    return out


def reported(text: str) -> str:
    """A failure's text as the platform may show it: one line of printable characters (each
    other one written as its escape: a newline, a terminal's escape sequence), at most
    REPORT_CHARS. Much of it comes from what a tenant controls (a command's output on their
    machine, a message of their cluster's API server), and it reaches conditions, events and
    the terminals of whoever reads them."""
    return clip(printable(text), REPORT_CHARS)


def set_condition(
    conditions: Conditions, type_: str, *, ok: bool, reason: str, message: str, now: timestamp_pb2.Timestamp
) -> None:
    """A plain observation (Ready, Healthy)."""
    _set(_get(conditions, type_), TRUE if ok else FALSE, reason, message, now)


def reset_plan(conditions: Conditions, names: Sequence[str]) -> None:
    """Forget a re-runnable plan's previous run (an upgrade or scale starts)."""
    keep = [c for c in conditions if c.type not in set(names)]
    del conditions[:]
    conditions.extend(keep)
