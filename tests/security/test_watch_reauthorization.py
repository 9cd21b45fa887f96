"""Rule: an open watch is only as good as the access that opened it. The apiserver checks every
open stream again, its credential authenticated and the same authorization asked, at once when
it learns of a change to accounts or policies (a Logout, a user disabled, a binding removed) and
every `watch.reauthorize_interval` seconds besides; a stream also ends by its token's expiry.
A stream that fails the check ends with the status the same call would get if opened now
(UNAUTHENTICATED or PERMISSION_DENIED), and the audit log records it.

Before, a watch was authorized once, when it opened: a user whose binding was removed, who was
disabled, or whose token was revoked or had expired went on receiving every change of the tenant
for as long as it kept the stream open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.security.platform import (
    PASSWORD,
    SECRET,
    Client,
    Platform,
    binding,
    environment,
    private_cloud,
    start_platform,
    stop_platform,
    user,
)
from tests.support.apiserver import cluster, start
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2, policy_pb2
from tke.internal.auth.chain import PluginContext
from tke.internal.auth.tokens import TokenSigner
from tke.internal.storage.etcd import EtcdConfig
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode
TENANT = "team-a"
# Short enough that a test sees several periodic checks within a second.
INTERVAL = 0.2


class Stream:
    """A cluster Watch read in the background: the events it brought, and how it ended."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.events: list[Any] = []  # ClusterEvent, or ClusterEventBatch (WatchBatches)
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.call:
                self.events.append(event)
            self.code = Code.OK
        except grpc.aio.AioRpcError as err:
            self.code, self.details = err.code(), err.details() or ""

    def added(self) -> list[str]:
        return [e.object.metadata.name for e in self.events if e.type == meta_pb2.WATCH_EVENT_TYPE_ADDED]


async def opened(client: Client) -> Stream:
    """`client`'s watch of its tenant's clusters, once its initial state has been sent."""
    stream = Stream(client.clusters.Watch(cluster_pb2.WatchClustersRequest()))
    bookmark = meta_pb2.WATCH_EVENT_TYPE_BOOKMARK
    await wait_for(
        lambda: stream.code is not None or any(e.type == bookmark for e in stream.events), what="the watch open"
    )
    assert stream.code is None, f"the watch ended at once: {stream.code} {stream.details}"
    return stream


async def create_cluster(platform: Platform, name: str) -> None:
    c = cluster(name)
    c.metadata.tenant_id = TENANT
    await platform.root.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))


async def viewer(platform: Platform, name: str) -> Client:
    """A user of the tenant bound to the viewer role there (binding `<name>-view`), logged in."""
    await platform.add_user(name, TENANT)
    await platform.bind(binding(f"{name}-view", TENANT, "viewer", users=[name]))
    return await platform.login(name)


async def ends_before_change(platform: Platform, stream: Stream, code: grpc.StatusCode) -> None:
    """After the access went away: a change made now never reaches the stream, which ends with `code`."""
    await create_cluster(platform, "after")
    await wait_for(lambda: stream.code is not None or "after" in stream.added(), what="the stream's end or the change")
    assert "after" not in stream.added(), "a change made after the access went away reached the old stream"
    await wait_for(lambda: stream.code is not None, what="the stream's end")
    assert stream.code == code, f"{stream.code}: {stream.details}"
    assert "Traceback" not in stream.details


def audited_end(platform: Platform, code: grpc.StatusCode) -> dict[str, Any] | None:
    """The audit event of the last cluster watch ended by a check with `code`, once written."""
    events = [
        e
        for e in platform.audit_events()
        if e["method"] == "/tke.platform.v1.ClusterService/Watch"
        and e["code"] == code.name
        and e["reason"].startswith("checked again while open: ")
    ]
    return events[-1] if events else None


async def test_a_watch_ends_when_its_binding_is_removed(platform: Platform) -> None:
    wanda = await viewer(platform, "wanda")
    stream = await opened(wanda)
    await create_cluster(platform, "before")
    await wait_for(lambda: "before" in stream.added(), what="the change before the binding goes")

    await platform.root.policy.DeleteRoleBinding(
        policy_pb2.DeleteRoleBindingRequest(name="wanda-view", tenant_id=TENANT)
    )
    await ends_before_change(platform, stream, Code.PERMISSION_DENIED)
    assert "may not watch clusters in tenant 'team-a'" in stream.details
    # The same answer as a watch opened now.
    again = Stream(wanda.clusters.Watch(cluster_pb2.WatchClustersRequest()))
    await wait_for(lambda: again.code is not None, what="a new watch refused")
    assert again.code == Code.PERMISSION_DENIED
    event = await wait_for(lambda: audited_end(platform, Code.PERMISSION_DENIED), what="the audit event")
    assert event["user"] == "wanda" and event["decision"] == "deny"


async def test_a_watch_ends_when_its_user_is_disabled(platform: Platform) -> None:
    walter = await viewer(platform, "walter")
    stream = await opened(walter)
    await platform.root.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=user("walter", disabled=True)))
    await ends_before_change(platform, stream, Code.UNAUTHENTICATED)
    assert "token is no longer valid" in stream.details
    event = await wait_for(lambda: audited_end(platform, Code.UNAUTHENTICATED), what="the audit event")
    assert event["user"] == "walter" and event["decision"] == "unauthenticated"


async def test_a_watch_ends_when_its_token_is_logged_out(platform: Platform) -> None:
    wendy = await viewer(platform, "wendy")
    stream = await opened(wendy)
    await wendy.auth.Logout(accounts_pb2.LogoutRequest())
    await ends_before_change(platform, stream, Code.UNAUTHENTICATED)
    assert "revoked" in stream.details


async def test_a_watch_by_api_key_ends_when_the_key_is_deleted(platform: Platform) -> None:
    wilma = await viewer(platform, "wilma")
    key = await wilma.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(description="a script"))
    stream = await opened(Client(platform.api, key.secret))
    await wilma.auth.DeleteAPIKey(accounts_pb2.DeleteAPIKeyRequest(id=key.key.id))
    await ends_before_change(platform, stream, Code.UNAUTHENTICATED)


@pytest.fixture
async def rechecked(
    etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Platform]:
    """The platform with a short re-check interval."""
    for key, value in environment().items():
        monkeypatch.setenv(key, value)
    audit = tmp_path / "audit.jsonl"
    config = private_cloud(etcd_config, audit)
    config = replace(config, watch=replace(config.watch, reauthorize_interval=INTERVAL))
    running = await start_platform(config, audit)
    try:
        yield running
    finally:
        await stop_platform(running)


async def test_a_watch_ends_when_its_token_expires(rechecked: Platform) -> None:
    platform = rechecked
    got = await platform.root.auth.CreateUser(
        accounts_pb2.CreateUserRequest(user=user("wes", TENANT), password=PASSWORD)
    )
    await platform.bind(binding("wes-view", TENANT, "viewer", users=["wes"]))
    # A token that expires within two seconds or so (expiry is in whole seconds).
    token, claims = TokenSigner(SECRET.encode()).issue("wes", got.metadata.uid, 2)
    stream = await opened(Client(platform.api, token, "wes"))
    await wait_for(lambda: stream.code is not None, what="the stream's end at the token's expiry")
    assert stream.code == Code.UNAUTHENTICATED, f"{stream.code}: {stream.details}"
    assert "expired" in stream.details
    assert time.time() >= claims.expires_at


async def test_an_authorized_watch_goes_on_across_checks(rechecked: Platform) -> None:
    platform = rechecked
    checks = platform.api.apiserver.auth.stream_checks
    assert checks is not None
    vera = await viewer(platform, "vera")
    stream = await opened(vera)
    start = checks.checked
    await wait_for(lambda: checks.checked >= start + 3, what="three periodic checks of the open watch")
    # A change elsewhere in the policies re-checks the watch at once; it still may watch.
    await platform.bind(binding("other-view", TENANT, "viewer", users=["someone-else"]))
    await create_cluster(platform, "later")
    await wait_for(lambda: "later" in stream.added(), what="a change after the checks")
    assert stream.code is None, f"the watch ended: {stream.code} {stream.details}"
    assert checks.ended == 0
    stream.call.cancel()


async def test_the_periodic_check_ends_a_watch_nobody_told_about(
    rechecked: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Access that goes away without a word to the apiserver (an external authorizer's policy
    changed, say): the periodic check ends the stream all the same."""
    platform = rechecked
    monkeypatch.setattr(PluginContext, "access_changed", lambda self, **scope: None)
    xena = await viewer(platform, "xena")
    stream = await opened(xena)
    await platform.root.policy.DeleteRoleBinding(
        policy_pb2.DeleteRoleBindingRequest(name="xena-view", tenant_id=TENANT)
    )
    await wait_for(lambda: stream.code is not None, what="the stream's end at its next periodic check")
    assert stream.code == Code.PERMISSION_DENIED, f"{stream.code}: {stream.details}"


async def test_a_logout_at_one_apiserver_ends_the_batched_watch_at_another(
    platform: Platform, etcd_config: EtcdConfig
) -> None:
    """Each apiserver follows the account records through its own etcd watch: a revocation
    written by one ends the streams it concerns on every other, WatchBatches as Watch."""
    second = await start(private_cloud(etcd_config, platform.audit.with_name("audit-2.jsonl")))
    platform.others.append(second)
    await viewer(platform, "yuri")
    yuri = await platform.login("yuri", api=second)
    batches = Stream(yuri.clusters.WatchBatches(cluster_pb2.WatchClustersRequest()))
    await create_cluster(platform, "before")
    await wait_for(
        lambda: any(e.object.metadata.name == "before" for b in batches.events for e in b.events),
        what="the batched watch at the second apiserver working",
    )
    # (The second apiserver sees the revocation and the clusters through two etcd watches, which
    # etcd does not order with each other: the end is checked, not that no later change came.)
    await Client(platform.api, yuri.token).auth.Logout(accounts_pb2.LogoutRequest())
    await wait_for(lambda: batches.code is not None, what="the batched watch's end")
    assert batches.code == Code.UNAUTHENTICATED, f"{batches.code}: {batches.details}"
