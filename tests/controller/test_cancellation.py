"""A reconcile never loses its cancellation: a stopping controller cancels its workers, and a
reconcile that caught the CancelledError and returned would let its worker go on with the next
step and the next key (test_hosted hung at teardown that way).

Python 3.11's asyncio.wait_for runs what it waits for in a task of its own and, when the caller
is cancelled in the loop turn that task finishes in, returns the result: the cancellation is
lost. These tests land the cancellation exactly there: at the end of a plan's step, and at the
end of every task an SSH dial or command starts (asyncssh bounds both with wait_for)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sshd import LAB_ADDRESSES, Machines, ssh_machines
from tke.internal.controller.events import MemoryRecorder
from tke.internal.controller.progress import CANCELLED, RetryPolicy, find
from tke.internal.controller.runner import Abort, Runner
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.ssh import SSHDialer, SSHOptions, Target
from tke.internal.provider.steps import Step
from tke.platform.v1 import cluster_pb2

pytestmark = pytest.mark.timeout(120)


class Context:
    def __init__(self) -> None:
        self.obj = cluster_pb2.Cluster()
        self.obj.metadata.name = "c"


async def write(obj: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
    await asyncio.sleep(0)  # a status write suspends the reconcile, as the apiserver call does
    return obj


async def test_a_cancellation_that_lands_as_a_step_finishes_stops_the_plan() -> None:
    plan: asyncio.Task[Any] | None = None
    ran: list[str] = []

    async def finishes_as_its_reconcile_is_cancelled(ctx: Context) -> None:
        ran.append("First")
        assert plan is not None
        # The cancellation comes in the loop turn this step ends in, before the runner resumes.
        asyncio.get_running_loop().call_soon(plan.cancel)

    async def second(ctx: Context) -> None:
        ran.append("Second")

    runner: Runner[Context] = Runner("Cluster", MemoryRecorder(), RetryPolicy(3, 0.1, 1.0), 0)
    steps = [Step("First", finishes_as_its_reconcile_is_cancelled), Step("Second", second)]
    plan = asyncio.create_task(runner.run(Context(), steps, write))
    await asyncio.wait({plan})
    assert plan.cancelled(), f"the plan went on after its cancellation: ran {ran}, returned {plan.result()}"
    assert ran == ["First"]


@contextlib.contextmanager
def cancel_when_task_ends(caller: asyncio.Task[Any], nth: int) -> Iterator[list[bool]]:
    """Cancel `caller` when the `nth` task created inside the block ends, in that same loop
    turn: the callback is the task's first, ahead of whoever waits for it. Yields a list that
    holds True once the cancellation was sent."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    created = 0
    sent: list[bool] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        nonlocal created
        task = asyncio.Task(coro, loop=loop, **kwargs)
        created += 1
        if created == nth:
            task.add_done_callback(lambda _: sent.append(caller.cancel()))
        return task

    loop.set_task_factory(factory)
    try:
        yield sent
    finally:
        loop.set_task_factory(previous)


async def cancelled_as_task_ends(operation: Coroutine[Any, Any, object], nth: int) -> bool:
    """Run `operation`, cancelled as the `nth` task it starts ends. False when it started fewer
    tasks (and succeeded); True when it was cancelled then and ended in CancelledError."""
    caller = asyncio.ensure_future(operation)
    with cancel_when_task_ends(caller, nth) as sent:
        await asyncio.wait({caller})
    if not sent:
        caller.result()
        return False
    assert caller.cancelled(), f"cancelled as task {nth} ended, the operation " + (
        f"raised {caller.exception()!r}" if caller.exception() else f"returned {caller.result()!r}"
    )
    return True


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machines]:
    with ssh_machines(tmp_path / "ssh", 1) as m:
        yield m


def dialer_and_target(m: Machines) -> tuple[SSHDialer, Target]:
    creds = ConfiguredCredentials({"default/key": CredentialConfig(private_key_file=str(m.key.private_key_file))})
    server = m.servers[0]
    dialer = SSHDialer(creds, SSHOptions(known_hosts_file=str(m.known_hosts)), LAB_ADDRESSES)
    return dialer, Target(server.host, server.port, "root", "key", "default")


async def test_an_ssh_dial_cancelled_as_any_of_its_tasks_ends_is_cancelled(machine: Machines) -> None:
    dialer, target = dialer_and_target(machine)

    async def dial() -> None:
        async with dialer.connect(target):
            pass

    nth = 1
    while await cancelled_as_task_ends(dial(), nth):
        nth += 1
    assert nth > 1, "the dial started no task: nothing was cancelled"


async def test_an_ssh_command_cancelled_as_any_of_its_tasks_ends_is_cancelled(machine: Machines) -> None:
    dialer, target = dialer_and_target(machine)
    nth, more = 1, True
    while more:
        # A connection of its own each time: a cancelled command may leave its channel half open.
        async with dialer.connect(target) as ch:
            more = await cancelled_as_task_ends(ch.exec("true"), nth)
        nth += 1
    assert nth > 2, "the command started no task: nothing was cancelled"


async def test_an_abort_cancels_the_running_step_and_starts_no_other() -> None:
    abort = Abort()
    started = asyncio.Event()
    ran: list[str] = []

    async def hangs(ctx: Context) -> None:
        ran.append("First")
        started.set()
        await asyncio.Event().wait()

    async def second(ctx: Context) -> None:
        ran.append("Second")

    runner: Runner[Context] = Runner("Cluster", MemoryRecorder(), RetryPolicy(3, 0.1, 1.0), 0)
    ctx = Context()
    plan = asyncio.create_task(runner.run(ctx, [Step("First", hangs), Step("Second", second)], write, abort=abort))
    await started.wait()
    abort.request("the cluster is being deleted")
    result = await plan
    assert result.aborted and ran == ["First"]
    condition = find(ctx.obj.status.conditions, "First")
    assert condition is not None
    assert (condition.reason, condition.message, condition.retries) == (
        CANCELLED,
        "step First cancelled: the cluster is being deleted",
        0,
    )


async def test_a_controller_stopping_while_a_step_is_aborted_still_stops() -> None:
    """The abort's cancellation and the worker's land together: the plan ends cancelled, never
    as an aborted plan that lets the worker go on to the next key."""
    abort = Abort()
    started = asyncio.Event()

    async def hangs(ctx: Context) -> None:
        started.set()
        await asyncio.Event().wait()

    runner: Runner[Context] = Runner("Cluster", MemoryRecorder(), RetryPolicy(3, 0.1, 1.0), 0)
    plan = asyncio.create_task(runner.run(Context(), [Step("First", hangs)], write, abort=abort))
    await started.wait()
    abort.request("the cluster is being deleted")
    plan.cancel()
    await asyncio.wait({plan})
    assert plan.cancelled(), f"the plan returned {plan.result()} after its worker was cancelled"
