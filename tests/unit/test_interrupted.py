"""Resolving an interrupted write from the key as read back: applied, not applied (send it
again), or overtaken by someone else's write; and a read back that fails too stays ambiguous."""

from __future__ import annotations

import pytest

from tke.internal.storage.interrupted import Outcome, outcome, resolve
from tke.internal.storage.store import Item, Unavailable

OURS = b"ours"


def at(revision: int, value: bytes = b"theirs") -> Item:
    return Item(key="k", value=value, mod_revision=revision, create_revision=1)


@pytest.mark.parametrize(
    ("current", "value", "expected", "result"),
    [
        # create (the key was absent)
        (at(7, OURS), OURS, 0, Outcome.APPLIED),
        (None, OURS, 0, Outcome.NOT_APPLIED),
        (at(7), OURS, 0, Outcome.OVERTAKEN),
        # update from revision 5
        (at(7, OURS), OURS, 5, Outcome.APPLIED),
        (at(5), OURS, 5, Outcome.NOT_APPLIED),
        (at(5, OURS), OURS, 5, Outcome.NOT_APPLIED),  # the same bytes were there already: not ours
        (at(7), OURS, 5, Outcome.OVERTAKEN),
        (None, OURS, 5, Outcome.OVERTAKEN),  # deleted by someone else
        # delete at revision 5
        (None, None, 5, Outcome.APPLIED),
        (at(5), None, 5, Outcome.NOT_APPLIED),
        (at(7), None, 5, Outcome.OVERTAKEN),
    ],
)
def test_outcome(current: Item | None, value: bytes | None, expected: int, result: Outcome) -> None:
    assert outcome(current, value=value, expected_revision=expected) is result


async def test_resolve_reads_back_and_keeps_an_unknown_outcome_ambiguous() -> None:
    async def read() -> Item | None:
        return at(7, OURS)

    found = await resolve(read, value=OURS, expected_revision=0)
    assert found.outcome is Outcome.APPLIED and found.current == at(7, OURS)

    async def unreachable() -> Item | None:
        raise Unavailable("etcd: unavailable")

    with pytest.raises(Unavailable) as err:
        await resolve(unreachable, value=OURS, expected_revision=0)
    assert err.value.ambiguous
