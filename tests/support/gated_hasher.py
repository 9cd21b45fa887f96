"""A password hash function held at a gate, for tests of the password lane: it counts the hashes
running at once (and the most ever), and each waits until the test opens the gate, so a test
sees how many a server runs at once, and what it admits meanwhile, without timing anything."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

HELD = 60.0  # seconds a hash waits for the gate at most: only a broken test gets there


class GatedHasher:
    """One gate and one count for every function it wraps (a check and a hash together)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = 0
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any) -> Any:
            with self._lock:
                self.started += 1
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                self.gate.wait(HELD)
                return real(*args)
            finally:
                with self._lock:
                    self.running -= 1

        return held

    def open(self) -> None:
        self.gate.set()
