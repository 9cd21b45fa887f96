"""StreamChecks' bounds: checks of many open streams run at most CONCURRENT_CHECKS at once,
changes in a loop check a stream at most once per CHANGE_SPACING, a change for one user or
tenant checks only its streams, and the heap holds about one entry per open stream."""

from __future__ import annotations

import asyncio
import time

from tests.support.waiting import wait_for
from tke.internal.auth.authn import Credentials
from tke.internal.auth.identity import EXPIRES, Identity
from tke.internal.auth.recheck import CHANGE_SPACING, CONCURRENT_CHECKS, OpenStream, Refusal, StreamChecks
from tke.internal.rpc import errors

HOUR = 3600.0


def stream(user: str = "alice", tenant: str = "team-a", expires: float | None = None) -> OpenStream:
    extra = {EXPIRES: (repr(expires),)} if expires is not None else {}
    identity = Identity(user=user, tenant_id=tenant, extra=extra)
    return OpenStream("/tke.platform.v1.ClusterService/Watch", None, Credentials({}), identity, tenant)


async def test_checks_run_a_few_at_once_and_only_for_the_streams_a_change_concerns() -> None:
    release = asyncio.Event()
    running: list[OpenStream] = []

    async def check(s: OpenStream) -> Refusal | None:
        running.append(s)
        await release.wait()
        return None

    checks = StreamChecks(check, HOUR)
    checks.start()
    try:
        ours = [stream() for _ in range(50)]
        others = [stream("bob", "team-b") for _ in range(50)]
        for s in ours + others:
            checks.add(s)
        checks.changed(tenant="team-a")
        await wait_for(lambda: len(running) == CONCURRENT_CHECKS, what="the first checks")
        # The others wait for a slot; nothing of team-b's was asked for.
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(running) == CONCURRENT_CHECKS
        release.set()
        await wait_for(lambda: checks.checked == 50, what="every stream of team-a checked")
        assert set(running) == set(ours)
        checks.changed(user="bob")
        await wait_for(lambda: checks.checked == 100, what="bob's streams checked")
        assert set(running) == set(ours + others)
    finally:
        await checks.stop()


async def test_changes_in_a_loop_check_a_stream_once_per_spacing() -> None:
    async def allow(s: OpenStream) -> Refusal | None:
        return None

    checks = StreamChecks(allow, HOUR)
    checks.start()
    try:
        streams = [stream() for _ in range(100)]
        for s in streams:
            checks.add(s)
        checks.changed()
        await wait_for(lambda: checks.checked == 100, what="the first change's checks, at once")
        first = min(s.changed_at for s in streams)
        for _ in range(1000):
            checks.changed(tenant="team-a")
        # One more check each, a spacing after the first; the heap stays about one entry per stream.
        assert all(s.due >= first + CHANGE_SPACING for s in streams)
        assert len(checks._heap) <= 2 * checks.open + 64
        for s in streams:
            checks.remove(s)
        assert checks.open == 0
    finally:
        await checks.stop()


async def test_a_stream_is_checked_by_its_credentials_expiry() -> None:
    refused = Refusal(errors.unauthenticated("invalid credentials: token has expired"), "unauthenticated", "expired")

    async def expired(s: OpenStream) -> Refusal | None:
        return refused if time.time() >= (s.identity.expires_at or 0) else None

    checks = StreamChecks(expired, HOUR)
    checks.start()
    try:
        s = stream(expires=time.time() + 0.3)
        checks.add(s)
        await wait_for(lambda: s.refusal is not None, what="the check at the expiry")
        assert s.refusal is refused and s.closed and checks.ended == 1
    finally:
        await checks.stop()
