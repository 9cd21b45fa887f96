"""Small statistics shared by the figures: percentiles, the median of rounds and its spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `values` by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rounds(values: Sequence[float]) -> dict[str, Any]:
    """Median of several rounds with the spread (min, max) and the rounds themselves."""
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "rounds": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": [round(v, 4) for v in values],
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0
