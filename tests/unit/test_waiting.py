"""The tests' waiting helpers fail naming what they waited for. Each scenario runs in an event
loop of its own, so that no other test's tasks are in its stacks."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.waiting import bounded, wait_for


def test_a_hang_fails_with_the_tasks_stacks() -> None:
    async def stuck_somewhere() -> None:
        await asyncio.Event().wait()

    async def scenario() -> None:
        async with bounded(0.2, "the scenario"):
            await stuck_somewhere()

    with pytest.raises(AssertionError) as err:
        asyncio.run(scenario())
    assert "the scenario took more than 0.2s" in str(err.value) and "stuck_somewhere" in str(err.value)


def test_a_check_that_never_returns_fails_naming_the_condition() -> None:
    async def never() -> bool:
        await asyncio.Event().wait()
        return True

    with pytest.raises(AssertionError, match=r"the answer: a check did not return within 0\.2s"):
        asyncio.run(wait_for(never, within=0.2, what="the answer"))
