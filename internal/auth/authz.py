"""Authorization: may this identity do this?

An Authorizer sees the call's Attributes and answers ALLOW, DENY or NO_OPINION with a reason.
Decision's zero value is DENY, so a forgotten decision fails closed; NO_OPINION lets
authorizers compose: a Union asks the next one, and denies when nobody allows.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tke.internal.auth.identity import Identity


class Decision(enum.IntEnum):
    DENY = 0
    ALLOW = 1
    NO_OPINION = 2


@dataclass(frozen=True)
class Attributes:
    """What a call wants to do. `tenant` is the tenant it acts in ("*": every tenant); `name` is
    empty for collection verbs (list, watch, create without a name)."""

    identity: Identity
    verb: str
    resource: str
    name: str = ""
    tenant: str = ""


class Authorizer(Protocol):
    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]: ...


class Union:
    """Asks each authorizer in turn until one allows or denies."""

    def __init__(self, authorizers: Sequence[Authorizer]) -> None:
        self.authorizers = list(authorizers)

    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        reasons = []
        for authorizer in self.authorizers:
            decision, reason = await authorizer.authorize(attributes)
            if decision is not Decision.NO_OPINION:
                return decision, reason
            if reason:
                reasons.append(reason)
        why = "; ".join(reasons) or "no authorizer allows it"
        return Decision.DENY, why


class AuthorizerFunc:
    """An authorizer made of a function."""

    def __init__(self, fn: Callable[[Attributes], Awaitable[tuple[Decision, str]]]) -> None:
        self.fn = fn

    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        return await self.fn(attributes)
