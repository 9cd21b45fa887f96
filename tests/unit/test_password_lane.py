"""The password lane's rule, with a hash function held at a gate: at most `hashes` hashes run at
once, calls wait in arrival order up to the queue's bound, one user, tenant or client holds at
most its share, exempt calls are never refused, and a place comes back only when its hash has
finished (a client cancelling its call does not free a thread that is still hashing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support.gated_hasher import GatedHasher
from tests.support.waiting import wait_for
from tke.internal.auth.password_lane import REASON, PasswordLane, Share
from tke.internal.rpc import errors


def echo(value: str) -> str:
    return value


@pytest.fixture
async def gated() -> AsyncIterator[GatedHasher]:
    hasher = GatedHasher()
    yield hasher
    hasher.open()  # nothing stays held, whatever the test did


def refusal(err: errors.ApiError) -> dict[str, str]:
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = next(d for d in err.details if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.reason == REASON
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in err.details)
    return dict(info.metadata)


def of(user: str, tenant: str) -> tuple[Share, Share]:
    return Share("user", user), Share("tenant", tenant)


async def test_one_hash_at_once_in_arrival_order_and_the_queue_is_bounded(gated: GatedHasher) -> None:
    held = gated.wrap(echo)
    lane = PasswordLane(hashes=1, queue=2, per_tenant=10, per_user=10)
    calls = [asyncio.ensure_future(lane.run(of(f"u{i}", f"t{i}"), held, f"u{i}")) for i in range(3)]
    await wait_for(lambda: gated.started == 1 and lane.waiting == 2, what="one hashing, two waiting")
    with pytest.raises(errors.ApiError) as refused:
        await lane.run(of("late", "t-late"), held, "late")
    assert refusal(refused.value) == {"scope": "queue", "limit": "2"}
    gated.open()
    assert await asyncio.gather(*calls) == ["u0", "u1", "u2"]
    assert gated.most == 1 and lane.running == 0 and lane.held == {}
    lane.close()


async def test_a_user_and_a_tenant_hold_their_share_and_others_are_admitted(gated: GatedHasher) -> None:
    held = gated.wrap(echo)
    lane = PasswordLane(hashes=1, queue=10, per_tenant=3, per_user=2)
    lou = [asyncio.ensure_future(lane.run(of("lou", "team-a"), held, "lou")) for _ in range(2)]
    await wait_for(lambda: lane.waiting == 1, what="lou's two calls in the lane")
    with pytest.raises(errors.ApiError) as refused:
        await lane.run(of("lou", "team-a"), held, "lou")
    assert refusal(refused.value) == {"scope": "user", "limit": "2"}
    mia = asyncio.ensure_future(lane.run(of("mia", "team-a"), held, "mia"))  # the tenant's third
    await wait_for(lambda: lane.waiting == 2, what="mia's call in the lane")
    with pytest.raises(errors.ApiError) as refused:
        await lane.run(of("ned", "team-a"), held, "ned")
    assert refusal(refused.value) == {"scope": "tenant", "limit": "3"}
    assert "tenant 'team-a' already has its share" in refused.value.message
    amy = asyncio.ensure_future(lane.run(of("amy", "team-b"), held, "amy"))  # another tenant
    # An exempt call (the bootstrap administrator, a platform administrator) is never refused.
    root = asyncio.ensure_future(lane.run(of("lou", "team-a"), held, "root", exempt=True))
    await wait_for(lambda: lane.waiting == 4, what="amy's and root's calls in the lane")
    gated.open()
    assert await asyncio.gather(*lou, mia, amy, root) == ["lou", "lou", "mia", "amy", "root"]
    assert gated.most == 1 and lane.held == {}
    lane.close()


async def test_a_login_refusal_says_neither_which_share_nor_the_tenant(gated: GatedHasher) -> None:
    held = gated.wrap(echo)
    lane = PasswordLane(hashes=1, queue=10, per_tenant=1, per_user=5)
    shown = "this user name or its tenant"
    first = asyncio.ensure_future(lane.run((Share("user", "a", shown), Share("tenant", "hidden", shown)), held, "a"))
    await wait_for(lambda: gated.started == 1, what="the first hash")
    with pytest.raises(errors.ApiError) as refused:
        await lane.run((Share("user", "b", shown), Share("tenant", "hidden", shown)), held, "b")
    assert refusal(refused.value) == {"scope": "login"}
    assert "hidden" not in refused.value.message and refused.value.message.startswith(shown)
    gated.open()
    await first
    lane.close()


async def test_a_cancelled_call_keeps_its_place_until_its_hash_has_finished(gated: GatedHasher) -> None:
    held = gated.wrap(echo)
    lane = PasswordLane(hashes=1, queue=1, per_tenant=10, per_user=1)
    hashing = asyncio.ensure_future(lane.run(of("lou", "team-a"), held, "lou"))
    await wait_for(lambda: gated.started == 1, what="lou's hash running")
    hashing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hashing
    # The hash still runs on its thread: lou still holds its place, and the thread is taken.
    assert lane.running == 1 and lane.held[("user", "lou")] == 1
    with pytest.raises(errors.ApiError):
        await lane.run(of("lou", "team-a"), held, "lou")
    # A call cancelled while it waits leaves at once.
    waiting = asyncio.ensure_future(lane.run(of("amy", "team-b"), held, "amy"))
    await wait_for(lambda: lane.waiting == 1, what="amy waiting")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert lane.waiting == 0 and ("user", "amy") not in lane.held
    gated.open()
    await wait_for(lambda: lane.running == 0 and not lane.held, what="the cancelled hash's place back")
    assert await lane.run(of("lou", "team-a"), held, "again") == "again"
    assert gated.most == 1
    lane.close()


def test_a_lane_needs_one_thread_and_shares_of_one() -> None:
    for bad in ({"hashes": 0}, {"per_user": 0}, {"per_tenant": 0}, {"queue": -1}):
        with pytest.raises(ValueError):
            PasswordLane(**({"hashes": 1, "queue": 1, "per_tenant": 1, "per_user": 1} | bad))
