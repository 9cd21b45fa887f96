"""cancel_and_wait: the tasks it stops end, their own cancellation is not raised, and the
caller's cancellation always is. `task.cancel()` then `await task` inside
`suppress(CancelledError)` swallowed the caller's cancellation as if it were the task's, and a
stopping component went on as if it had not been cancelled
(test_a_cancellation_of_the_caller_while_it_waits_is_raised fails with that pattern).

Every step waits for an event the code under test sets, never for time; `asyncio.sleep(0)`
only yields one loop turn, in which a task just created runs up to its first wait."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tke.internal.tasks import cancel_and_wait


async def forever() -> None:
    await asyncio.Event().wait()


async def test_the_task_is_cancelled_and_has_ended() -> None:
    task = asyncio.create_task(forever())
    await asyncio.sleep(0)  # let it start: a cancellation then lands inside its wait
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_a_task_that_ends_with_cancelled_error_while_cleaning_up_is_fine() -> None:
    cleaned: list[str] = []

    async def cleans_up() -> None:
        try:
            await forever()
        finally:
            await asyncio.sleep(0)  # clean-up that itself awaits
            cleaned.append("cleaned")

    task = asyncio.create_task(cleans_up())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
    assert cleaned == ["cleaned"]


async def test_none_and_tasks_that_already_ended_are_left_alone() -> None:
    async def returns() -> int:
        return 7

    done = asyncio.create_task(returns())
    cancelled = asyncio.create_task(forever())
    cancelled.cancel()
    await asyncio.wait({done, cancelled})
    await cancel_and_wait(None)
    await cancel_and_wait(done, cancelled, None)
    assert done.result() == 7
    assert cancelled.cancelled()


async def test_the_error_a_task_ended_with_is_raised_as_awaiting_it_would() -> None:
    async def fails_when_cancelled() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            raise RuntimeError("failed while stopping") from None

    async def failed() -> None:
        raise ValueError("failed before")

    first = asyncio.create_task(fails_when_cancelled())
    second = asyncio.create_task(forever())
    ended = asyncio.create_task(failed())
    await asyncio.wait({ended})
    with pytest.raises(RuntimeError, match="failed while stopping"):
        await cancel_and_wait(first, second)
    assert second.cancelled()  # the first task's error is raised after every task ended
    with pytest.raises(ValueError, match="failed before"):
        await cancel_and_wait(ended)


async def test_a_cancellation_of_the_caller_while_it_waits_is_raised() -> None:
    stopping = asyncio.Event()
    went_on: list[str] = []

    async def slow_to_stop() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            stopping.set()
            await asyncio.Event().wait()  # a clean-up that takes time
            raise

    child = asyncio.create_task(slow_to_stop())

    async def stopper() -> None:
        await cancel_and_wait(child)
        went_on.append("went on after its cancellation")

    await asyncio.sleep(0)
    caller = asyncio.create_task(stopper())
    await stopping.wait()  # the caller has cancelled the child and waits for it
    caller.cancel()
    await asyncio.wait({caller})
    assert caller.cancelled(), f"the caller's cancellation was lost: {went_on}"
    assert went_on == []
    assert child.done()


async def test_the_callers_cancellation_is_passed_on_and_the_wait_goes_on_until_the_task_ended() -> None:
    stopping, passed_on, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: list[bool] = []

    async def finishes_its_clean_up() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            stopping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
            passed_on.set()
            await release.wait()
            raise

    child = asyncio.create_task(finishes_its_clean_up())

    async def stopper() -> None:
        try:
            await cancel_and_wait(child)
        finally:
            seen.append(child.done())

    await asyncio.sleep(0)
    caller = asyncio.create_task(stopper())
    await stopping.wait()
    caller.cancel()
    await passed_on.wait()  # the child got the caller's cancellation
    assert not caller.done(), "the caller stopped waiting before the child ended"
    release.set()
    await asyncio.wait({caller})
    assert caller.cancelled()
    assert seen == [True]
