"""Rule: Login is throttled per user name and per client address (token buckets; beyond them
RESOURCE_EXHAUSTED with a google.rpc.RetryInfo, before any password is checked), the buckets'
memory is bounded whatever names an attacker cycles through, and the audit event of a failed
login names the user name tried, never the password. Successful logins are not throttled, but
their password checks run on the password lane: one user looping Login, or one client spraying
user names, holds its share of it and another user's login is still admitted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from tests.security.platform import PASSWORD, Platform, environment, private_cloud, start_platform, stop_platform
from tests.support.gated_hasher import GatedHasher
from tests.support.rpc import detail_of, expect_error
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc
from tke.internal.auth.passwords import hash_password, verify_password
from tke.internal.rpc.server import ListenConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.meta.v1 import meta_pb2
from tke.plugins.authn import accounts as accounts_module
from tke.plugins.authn.accounts import Accounts

Code = grpc.StatusCode
GUESS = "is it this one, maybe"
Launch = Callable[..., Awaitable[Platform]]


@pytest.fixture
async def launch(etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Launch]:
    """Starts a platform with the given accounts options. It also listens on a unix socket:
    another client, as far as the throttle is concerned."""
    for key, value in environment().items():
        monkeypatch.setenv(key, value)
    started: list[Platform] = []

    async def make(**options: Any) -> Platform:
        audit = tmp_path / "audit.jsonl"
        config = private_cloud(etcd_config, audit, **options)
        listen = ListenConfig(address="127.0.0.1:0", unix_socket=str(tmp_path / "api.sock"))
        platform = await start_platform(replace(config, listen=listen), audit)
        started.append(platform)
        return platform

    try:
        yield make
    finally:
        for platform in started:
            await stop_platform(platform)


def login(channel: grpc.aio.Channel, name: str, password: str) -> Any:
    return accounts_pb2_grpc.AuthServiceStub(channel).Login(accounts_pb2.LoginRequest(username=name, password=password))


def retry_delay(err: grpc.aio.AioRpcError) -> float:
    info: error_details_pb2.RetryInfo = detail_of(err, error_details_pb2.RetryInfo)
    return float(info.retry_delay.ToNanoseconds()) / 1e9


async def test_guessing_one_users_password_is_throttled(launch: Launch) -> None:
    # Two guesses, then one more every 15 seconds (far longer than two guesses take, even on a
    # loaded machine); the client limit is off here.
    platform = await launch(login_user_burst=2, login_user_interval=15.0, login_client_burst=0)
    await platform.add_user("victim", "team-a")
    await platform.add_user("bystander", "team-a")
    channel = platform.api.channel
    for _ in range(2):
        await expect_error(login(channel, "victim", GUESS), Code.UNAUTHENTICATED)
    # Throttled: even the right password is not looked at, so a guess tells nothing.
    err = await expect_error(login(channel, "victim", PASSWORD), Code.RESOURCE_EXHAUSTED)
    assert 0 < retry_delay(err) <= 15.0
    assert "this user name" in (err.details() or "")
    # Other users are not held up, and nor is the victim once the delay has passed.
    await login(channel, "bystander", PASSWORD)

    async def victim_logs_in() -> bool:
        try:
            await login(channel, "victim", PASSWORD)
        except grpc.aio.AioRpcError as e:
            assert e.code() == Code.RESOURCE_EXHAUSTED, e
            return False
        return True

    await wait_for(victim_logs_in, within=60, interval=0.5, what="the victim's login after the retry delay")
    # Successes cost nothing: a user logging in often is never throttled.
    for _ in range(5):
        await login(channel, "victim", PASSWORD)

    # The audit trail names every attempt's user name, and never a password.
    def attempts() -> list[dict[str, Any]] | None:
        events = [e for e in platform.audit_events() if e["method"].endswith("AuthService/Login")]
        return events if sum(e["name"] == "victim" for e in events) >= 9 else None

    events = await wait_for(attempts, what="the login attempts in the audit file")
    codes = [e["code"] for e in events if e["name"] == "victim"]
    assert codes[:3] == ["UNAUTHENTICATED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"] and codes[-1] == "OK"
    assert {e["verb"] for e in events} == {"login"}
    text = platform.audit.read_text()
    assert GUESS not in text and PASSWORD not in text


async def test_one_client_cannot_spray_many_user_names(launch: Launch) -> None:
    platform = await launch(login_client_burst=3, login_client_interval=60.0)
    await platform.add_user("alice", "team-a")
    for name in ("admin", "root", "operator"):
        await expect_error(login(platform.api.channel, name, GUESS), Code.UNAUTHENTICATED)
    err = await expect_error(login(platform.api.channel, "alice", PASSWORD), Code.RESOURCE_EXHAUSTED)
    assert "this client" in (err.details() or "") and 0 < retry_delay(err) <= 60.0
    # Another client (here: the unix socket) is not held up.
    async with grpc.aio.insecure_channel(f"unix:{platform.api.apiserver.config.listen.unix_socket}") as other:
        await login(other, "alice", PASSWORD)


async def test_cycling_user_names_cannot_grow_the_throttles_memory(launch: Launch) -> None:
    platform = await launch(login_user_burst=1, login_client_burst=0, login_tracked=16)
    accounts = next(p for p in platform.api.apiserver.auth.plugins if isinstance(p, Accounts))
    for i in range(80):
        await expect_error(login(platform.api.channel, f"made-up-{i}-" + "x" * 300, GUESS), Code.UNAUTHENTICATED)
        assert len(accounts.throttle.users) <= 16
    assert len(accounts.throttle.users) == 16


def accounts_of(platform: Platform) -> Accounts:
    return next(p for p in platform.api.apiserver.auth.plugins if isinstance(p, Accounts))


def gate_checks(monkeypatch: pytest.MonkeyPatch) -> GatedHasher:
    """Hold every password check of the accounts plugin at a gate the test opens."""
    hasher = GatedHasher()
    monkeypatch.setattr(accounts_module, "verify_password", hasher.wrap(verify_password))
    return hasher


def lane_refusal(err: BaseException | None) -> dict[str, str]:
    """The metadata of the password lane's refusal, which has a RetryInfo."""
    assert isinstance(err, grpc.aio.AioRpcError) and err.code() == Code.RESOURCE_EXHAUSTED, err
    info = detail_of(err, error_details_pb2.ErrorInfo)
    assert info.reason == "TOO_MANY_PASSWORD_HASHES" and info.domain == "tke.cloud", info
    assert retry_delay(err) > 0
    return dict(info.metadata)


async def test_one_user_looping_logins_cannot_take_the_password_checks(
    launch: Launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The failed-login throttle is off: every login here succeeds, which it never limits.
    platform = await launch(
        password_hashes=1, password_queue=3, password_user_share=2, login_user_burst=0, login_client_burst=0
    )
    await platform.add_user("lou", "team-a")
    await platform.add_user("amy", "team-b")
    lane = accounts_of(platform).lane
    hasher = gate_checks(monkeypatch)
    channel = platform.api.channel
    amy: asyncio.Future[Any] | None = None
    try:
        lou = [asyncio.ensure_future(login(channel, "lou", PASSWORD)) for _ in range(6)]
        # lou's share is 2: one check running, one waiting; the other four are refused at once.
        await wait_for(
            lambda: hasher.started + sum(c.done() for c in lou) >= 5, what="lou's logins admitted or refused"
        )
        refused = [c for c in lou if c.done()]
        assert len(refused) == 4 and hasher.started == 1
        for call in refused:
            assert lane_refusal(call.exception()) == {"scope": "login"}
            assert "this user name or its tenant already has its share" in (call.exception().details() or "")
        # Another user's login is admitted while lou holds its share, and lou's next is refused.
        amy = asyncio.ensure_future(login(channel, "amy", PASSWORD))
        await wait_for(lambda: lane.waiting == 2, what="amy's login waiting its turn")
        lane_refusal(await expect_error(login(channel, "lou", PASSWORD), Code.RESOURCE_EXHAUSTED))
    finally:
        hasher.open()
    assert amy is not None and (await amy).token
    for call in lou:
        if call not in refused:
            assert (await call).token
    assert hasher.most == 1  # never two checks at once
    assert lane.held == {} and lane.running == 0


async def test_one_client_spraying_user_names_holds_only_its_share(
    launch: Launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failed logins of many names (an attacker's, or many addresses'): each address is one share.
    platform = await launch(password_hashes=1, password_queue=10, password_tenant_share=2)
    await platform.add_user("lou", "team-a")
    hasher = gate_checks(monkeypatch)
    lane = accounts_of(platform).lane
    socket = f"unix:{platform.api.apiserver.config.listen.unix_socket}"
    try:
        spray = [asyncio.ensure_future(login(platform.api.channel, f"made-up-{i}", GUESS)) for i in range(4)]
        await wait_for(lambda: sum(c.done() for c in spray) == 2 and lane.waiting == 1, what="the spray's share")
        for call in spray:
            if call.done():
                assert lane_refusal(call.exception()) == {"scope": "client", "limit": "2"}
        # Another client (here: the unix socket) is admitted.
        async with grpc.aio.insecure_channel(socket) as other:
            lou = asyncio.ensure_future(login(other, "lou", PASSWORD))
            await wait_for(lambda: lane.waiting == 2, what="lou's login waiting its turn")
            hasher.open()
            assert (await lou).token
    finally:
        hasher.open()
    answers = await asyncio.gather(*spray, return_exceptions=True)
    codes = sorted(a.code().name for a in answers if isinstance(a, grpc.aio.AioRpcError))
    assert codes == ["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED", "UNAUTHENTICATED"]
    assert hasher.most == 1


async def test_a_password_change_that_races_hashes_each_password_once(
    launch: Launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user record changed while a ChangePassword checks the old password makes its
    compare-and-swap retry; the retry must not check and hash again (each is ~37 ms of CPU on
    the lane, and up to ten retries)."""
    platform = await launch()
    await platform.add_user("lou", "team-a", groups=["ops"])
    lou = await platform.login("lou")
    hasher = GatedHasher()
    monkeypatch.setattr(accounts_module, "verify_password", hasher.wrap(verify_password))
    monkeypatch.setattr(accounts_module, "hash_password", hasher.wrap(hash_password))
    change = asyncio.ensure_future(
        lou.auth.ChangePassword(accounts_pb2.ChangePasswordRequest(old_password=PASSWORD, new_password=GUESS))
    )
    try:
        await wait_for(lambda: hasher.started == 1, what="the old password's check held at the gate")
        # The record changes under the check: the change's compare-and-swap must go again.
        renamed = accounts_pb2.User(metadata=meta_pb2.ObjectMeta(name="lou"))
        renamed.spec.display_name = "Lou"
        mask = field_mask_pb2.FieldMask(paths=["spec.display_name"])
        await platform.root.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=renamed, update_mask=mask))
    finally:
        hasher.open()
    await change
    assert hasher.started == 2  # one check of the old password, one hash of the new
    await platform.login("lou", GUESS)
    users = await platform.root.auth.ListUsers(accounts_pb2.ListUsersRequest(tenant_id="team-a"))
    assert [u.spec.display_name for u in users.items if u.metadata.name == "lou"] == ["Lou"]
