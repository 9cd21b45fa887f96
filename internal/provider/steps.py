"""Steps and plans: a provider's work as an ordered list of explicitly named steps.

A step's name is the type of the condition that records its progress, so it is written out
(CamelCase), never derived from a function name: renaming a function must not orphan the
progress of every existing object. Names are unique across all the plans of a provider
(create, delete, scale, upgrade), since their conditions share one list.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")
_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
# Conditions the framework itself owns; no step may use these names.
RESERVED = frozenset({"Ready", "Healthy"})


@dataclass(frozen=True)
class Step(Generic[C]):
    name: str
    run: Callable[[C], Awaitable[None]]
    # Seconds one attempt may take before it counts as a temporary failure.
    timeout: float = 600.0
    # Failed attempts allowed before the object goes to Failed; None: the controller's default.
    max_retries: int | None = None
    # What the step does, for people (events, docs).
    description: str = ""


def check_plans(provider: str, plans: dict[str, Sequence[Step[C]]]) -> None:
    """Raise ValueError unless every step name is valid and unique across `plans`."""
    seen: dict[str, str] = {}
    for plan, steps in plans.items():
        for step in steps:
            if not _NAME.fullmatch(step.name) or step.name in RESERVED:
                raise ValueError(f"provider {provider}: step name {step.name!r} of plan {plan} is not a CamelCase name")
            if step.name in seen:
                raise ValueError(
                    f"provider {provider}: step {step.name!r} appears in plans {seen[step.name]} and {plan}; "
                    "names must be unique because each names a condition"
                )
            seen[step.name] = plan
