"""Auth plugins for tests, loaded by "module:Class" like any third-party plugin: audit sinks
that fail, stall or keep events in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from tke.internal.auth.audit import AuditEvent
from tke.internal.auth.authz import Attributes, Decision


class FailingSink:
    def __init__(self, context: Any = None) -> None:
        self.calls = 0

    async def write(self, events: Sequence[AuditEvent]) -> None:
        self.calls += 1
        raise OSError("disk on fire")

    async def close(self) -> None:
        return None


class StalledSink:
    """Never finishes a write: its queue fills and events are dropped."""

    def __init__(self, context: Any = None) -> None:
        pass

    async def write(self, events: Sequence[AuditEvent]) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


class MemorySink:
    events: list[AuditEvent] = []

    def __init__(self, context: Any = None) -> None:
        MemorySink.events = []

    async def write(self, events: Sequence[AuditEvent]) -> None:
        MemorySink.events.extend(events)

    async def close(self) -> None:
        return None


class TenantAdmin:
    """Allows everything inside the caller's own tenant (a stand-in for a cloud's CAM)."""

    def __init__(self, context: Any = None) -> None:
        pass

    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        if attributes.tenant == attributes.identity.tenant_id:
            return Decision.ALLOW, "own tenant"
        return Decision.DENY, "another tenant"
