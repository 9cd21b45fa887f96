"""Resolving a write that was cut off mid-flight.

A write whose connection broke before its answer came (`Unavailable(ambiguous=True)`) may or
may not have been applied. It is never sent again blind: the key it wrote is read back, and
what is there decides.

- APPLIED: our value is there (a put), or the key is gone (a delete): the write took effect.
- NOT_APPLIED: the key is still as the write expected to find it (at `expected_revision`, or
  absent for a create): nothing happened, and the same write may be sent again.
- OVERTAKEN: someone else's write is there: ours lost its compare, or was overwritten since.

Writes carry a value nobody else writes (a fresh uid, a new resource_version, an allocation's
own record), so "our bytes are there" means "our write was applied". If even the read back
fails, the outcome stays unknown: Unavailable(ambiguous=True) again.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from tke.internal.storage.store import Unavailable


class Stored(Protocol):
    """What a read back returns of a key: its value and the revision of its last write."""

    @property
    def value(self) -> bytes: ...
    @property
    def mod_revision(self) -> int: ...


S = TypeVar("S", bound=Stored)


class Outcome(enum.Enum):
    APPLIED = "applied"
    NOT_APPLIED = "not applied"
    OVERTAKEN = "overtaken"


@dataclass(frozen=True)
class Resolution(Generic[S]):
    outcome: Outcome
    current: S | None  # the key as read back; None: absent


def outcome(current: Stored | None, *, value: bytes | None, expected_revision: int) -> Outcome:
    """What became of a write of `value` (None: a delete) that compared the key's mod_revision
    with `expected_revision` (0: the key was absent), given the key as read back."""
    if value is None:
        if current is None:
            return Outcome.APPLIED
    elif current is not None and current.value == value and current.mod_revision != expected_revision:
        return Outcome.APPLIED
    if expected_revision == 0:
        untouched = current is None
    else:
        untouched = current is not None and current.mod_revision == expected_revision
    return Outcome.NOT_APPLIED if untouched else Outcome.OVERTAKEN


async def resolve(
    read: Callable[[], Awaitable[S | None]], *, value: bytes | None, expected_revision: int
) -> Resolution[S]:
    """Read the key back with `read` (the key's item, None when absent) and say what became of
    the interrupted write; see the module docstring."""
    try:
        current = await read()
    except Unavailable as err:
        raise Unavailable(str(err), ambiguous=True) from None
    return Resolution(outcome(current, value=value, expected_revision=expected_revision), current)
