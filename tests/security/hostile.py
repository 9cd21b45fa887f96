"""What the probes of a tenant's own endpoints share (test_hostile_machines,
test_hostile_clusters): this process's peak memory growth over a block, and a step run by the
controller's runner, to see what of a failure reaches its condition and event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from tke.internal.controller.events import MemoryRecorder
from tke.internal.controller.progress import REPORT_CHARS, RetryPolicy, find
from tke.internal.controller.runner import Runner
from tke.internal.provider.steps import Step
from tke.platform.v1 import cluster_pb2

MiB = 1 << 20
# What one hostile call may grow this process by (the limits are 16 MiB per command or file and
# 64 MiB per response; without them, the probes grow it by 1 to 2 GiB).
MEMORY_BOUND = 256 * MiB


class PeakGrowth:
    """This process's peak RSS growth over a block: the kernel's high-water mark, reset at the
    start (/proc/self/clear_refs), minus the RSS then."""

    def __enter__(self) -> PeakGrowth:
        Path("/proc/self/clear_refs").write_text("5")
        self.before = _status("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = _status("VmHWM") - self.before


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


class Context:
    def __init__(self) -> None:
        self.obj = cluster_pb2.Cluster()
        self.obj.metadata.name = "c"


async def failed_step(run: Callable[[Context], Awaitable[None]]) -> tuple[str, str]:
    """Run `run` as the step "Hostile" of a plan, once: the text its failure left in the step's
    condition (lastError) and in the event."""

    async def write(obj: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
        return obj

    recorder = MemoryRecorder()
    runner: Runner[Context] = Runner("Cluster", recorder, RetryPolicy(3, 60, 60), 0)
    ctx = Context()
    await runner.run(ctx, [Step("Hostile", run)], write)
    condition = find(ctx.obj.status.conditions, "Hostile")
    assert condition is not None and recorder.records
    return condition.last_error, recorder.records[-1].message


def assert_reported(condition_text: str, event_text: str, escaped: str) -> None:
    """One line of printable text, the hostile part escaped, the condition's clipped (the event
    adds its prefix)."""
    assert event_text == f"step Hostile failed, will retry: {condition_text}"
    assert condition_text.isprintable() and len(condition_text) <= REPORT_CHARS, condition_text[:200]
    assert escaped in condition_text
