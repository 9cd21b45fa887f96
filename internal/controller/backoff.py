"""Per-key exponential backoff: pure policy, no clock or I/O.

The n-th consecutive failure of a key waits base * 2**(n-1) seconds, at most `cap`; success
(`forget`) starts the key over."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.5
    cap: float = 60.0
    _failures: dict[Hashable, int] = field(default_factory=dict)

    def next_delay(self, key: Hashable) -> float:
        """Count one more failure of `key` and return how long to wait before its retry."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return float(min(self.cap, self.base * (2 ** min(n, 62))))

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)
