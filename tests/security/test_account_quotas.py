"""Security model: what one tenant, or one user, may store through the built-in accounts
(plugins/authn/accounts.py), probed as a hostile tenant would, so that no tenant fills etcd.

- Users and API keys count against their tenant's quotas (`quotas.users`, `quotas.apikeys`, and
  their bytes in `quotas.bytes`): the (N+1)th is RESOURCE_EXHAUSTED with an ErrorInfo (reason
  QUOTA_EXCEEDED), nothing is stored, a delete frees its place at once, another tenant is not
  affected, many creates at once never pass the quota, an update that grows a user past the
  bytes is refused; platform administrators are counted, never refused.
- Revoked tokens are bounded per user (`max_revocations_per_user`): a Logout always succeeds and
  its token stays refused, but past the bound it ends all the user's earlier sessions instead of
  storing one more record, so a Login/Logout loop keeps a bounded number of records in etcd.
- Password hashing is bounded (the password lane): a tenant admin looping CreateUser, or
  ChangePassword, runs one hash at a time however many calls it sends, holds at most its user's
  and its tenant's share of the lane, and another tenant's password change is still admitted;
  past the queue a tenant's call is refused, a platform administrator's never.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.security.platform import (
    PASSWORD,
    Client,
    Platform,
    binding,
    environment,
    private_cloud,
    start_platform,
    stop_platform,
    user,
)
from tests.support.gated_hasher import GatedHasher
from tests.support.rpc import detail_of, expect_error, quota_info
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2
from tke.internal.apiserver.quota import QuotaConfig
from tke.internal.auth.tokens import PREFIX as TOKEN_PREFIX
from tke.internal.plugin.loader import PluginError
from tke.internal.storage.etcd import EtcdConfig
from tke.internal.storage.store import Unavailable as StorageUnavailable
from tke.platform.v1 import cluster_pb2
from tke.plugins.authn import accounts as accounts_module
from tke.plugins.authn.accounts import Accounts

Code = grpc.StatusCode
Start = Callable[..., Awaitable[Platform]]


@pytest.fixture
async def secured(etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Start]:
    """Starts the private cloud's platform with these quotas and accounts options."""
    for key, value in environment().items():
        monkeypatch.setenv(key, value)
    started: list[Platform] = []

    async def with_quotas(quotas: QuotaConfig, **accounts_options: Any) -> Platform:
        audit = tmp_path / f"audit-{len(started)}.jsonl"
        config = replace(private_cloud(etcd_config, audit, **accounts_options), quotas=quotas)
        platform = await start_platform(config, audit)
        started.append(platform)
        return platform

    yield with_quotas
    for platform in started:
        await stop_platform(platform)


async def stored(platform: Platform, kind: str) -> list[str]:
    """The names of the accounts' records of `kind` in etcd."""
    apiserver = platform.api.apiserver
    root = f"{apiserver.prefix}/auth/{kind}/"
    page = await apiserver.store.list(root, limit=10_000)
    assert not page.more
    return [item.key[len(root) :] for item in page.items]


def create_user(client: Client, name: str, tenant: str = "", **spec: Any) -> Awaitable[accounts_pb2.User]:
    return client.auth.CreateUser(accounts_pb2.CreateUserRequest(user=user(name, tenant, **spec), password=PASSWORD))


async def user_names(client: Client, tenant: str) -> list[str]:
    page = await client.auth.ListUsers(accounts_pb2.ListUsersRequest(tenant_id=tenant))
    return sorted(u.metadata.name for u in page.items)


def create_key(client: Client, name: str = "") -> Awaitable[accounts_pb2.CreateAPIKeyResponse]:
    return client.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(user=name))


async def key_ids(client: Client, name: str) -> list[str]:
    return sorted(k.id for k in (await client.auth.ListAPIKeys(accounts_pb2.ListAPIKeysRequest(user=name))).keys)


async def test_the_user_past_the_tenants_quota_is_refused_and_a_delete_frees_its_place(secured: Start) -> None:
    platform = await secured(QuotaConfig(users=3))
    ann = await platform.member("ann", "team-a", "admin")  # the attacker, team-a's first user
    for name in ("a1", "a2"):
        await create_user(ann, name)

    err = await expect_error(create_user(ann, "a3"), Code.RESOURCE_EXHAUSTED)
    assert err.details() == (
        "tenant 'team-a' has 3 of 3 users (quota quotas.users); delete some or ask an operator to raise it"
    )
    assert quota_info(err) == {
        "tenant": "team-a",
        "resource": "users",
        "used": "3",
        "limit": "3",
        "quota": "quotas.users",
    }
    assert await user_names(ann, "team-a") == ["a1", "a2", "ann"]
    assert "a3" not in await stored(platform, "users")  # nothing stored

    # Another tenant has its own quota.
    bob = await platform.member("bob", "team-b", "admin")
    for name in ("b1", "b2"):
        await create_user(bob, name)

    # A delete frees its place at once.
    await ann.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name="a1"))
    await create_user(ann, "a3")
    await expect_error(create_user(ann, "a4"), Code.RESOURCE_EXHAUSTED)

    # A platform administrator is counted, never refused; the bootstrap administrator was made
    # in "default" whatever its quota.
    await create_user(platform.root, "a4", "team-a")
    assert await user_names(ann, "team-a") == ["a2", "a3", "a4", "ann"]
    err = await expect_error(create_user(ann, "a5"), Code.RESOURCE_EXHAUSTED)
    assert quota_info(err)["used"] == "4"
    for name in ("d1", "d2", "d3"):
        await create_user(platform.root, name, "default")
    assert "root" in await user_names(platform.root, "default")


async def test_api_keys_count_against_their_users_tenant(secured: Start) -> None:
    platform = await secured(QuotaConfig(apikeys=2))
    ann = await platform.member("ann", "team-a", "admin")
    await create_user(ann, "a1")
    first = await create_key(ann)
    await create_key(ann, "a1")

    # The tenant's third key, for any of its users, is refused; nothing is stored.
    for name in ("", "a1"):
        err = await expect_error(create_key(ann, name), Code.RESOURCE_EXHAUSTED)
        assert err.details() == (
            "tenant 'team-a' has 2 of 2 apikeys (quota quotas.apikeys); delete some or ask an operator to raise it"
        )
        assert quota_info(err) == {
            "tenant": "team-a",
            "resource": "apikeys",
            "used": "2",
            "limit": "2",
            "quota": "quotas.apikeys",
        }
    assert [len(await key_ids(ann, name)) for name in ("ann", "a1")] == [1, 1]
    assert len(await stored(platform, "apikeys")) == 2  # nothing stored

    # Another tenant is not affected.
    bob = await platform.member("bob", "team-b", "admin")
    await create_key(bob)
    await create_key(bob)

    # A delete frees its place at once; so does deleting a user, with its keys.
    await ann.auth.DeleteAPIKey(accounts_pb2.DeleteAPIKeyRequest(id=first.key.id))
    await create_key(ann)
    await ann.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name="a1"))
    await create_key(ann)
    await expect_error(create_key(ann), Code.RESOURCE_EXHAUSTED)

    # A platform administrator's key for a user of the tenant is counted, never refused.
    await create_key(platform.root, "ann")
    assert len(await key_ids(ann, "ann")) == 3


async def test_concurrent_creates_in_one_apiserver_never_pass_the_quotas(secured: Start) -> None:
    # The password lane's shares (one user's 2 hashes at once) would refuse most of these first.
    platform = await secured(QuotaConfig(users=4, apikeys=5), password_user_share=12, password_tenant_share=12)
    ann = await platform.member("ann", "team-a", "admin")

    users = await asyncio.gather(*(create_user(ann, f"c{i:02d}") for i in range(12)), return_exceptions=True)
    refused = [r for r in users if isinstance(r, grpc.aio.AioRpcError)]
    assert all(r.code() == Code.RESOURCE_EXHAUSTED for r in refused), [r.details() for r in refused]
    assert len(refused) == 9
    assert len(await user_names(ann, "team-a")) == 4

    keys = await asyncio.gather(*(create_key(ann) for _ in range(30)), return_exceptions=True)
    refused = [r for r in keys if isinstance(r, grpc.aio.AioRpcError)]
    assert all(r.code() == Code.RESOURCE_EXHAUSTED for r in refused), [r.details() for r in refused]
    assert len(refused) == 25
    assert len(await key_ids(ann, "ann")) == 5


async def test_users_bytes_count_and_an_update_that_grows_past_them_is_refused(secured: Start) -> None:
    platform = await secured(QuotaConfig(bytes=4_000))
    ann = await platform.member("ann", "team-a", "admin")
    created = 0
    while True:  # each user is a few hundred bytes: the bytes quota stops them, not the count
        try:
            await create_user(ann, f"u{created}")
        except grpc.aio.AioRpcError as err:
            assert err.code() == Code.RESOURCE_EXHAUSTED, err
            info = quota_info(err)
            assert (info["tenant"], info["resource"], info["quota"]) == ("team-a", "bytes", "quotas.bytes")
            assert "this user needs" in (err.details() or "")
            break
        created += 1
        assert created < 20
    assert created >= 3

    # Growing a user past the bytes (ten long groups, about 2 KB) is refused and not written.
    grown = user("u0", groups=[f"{'g' * 190}-{i}" for i in range(10)])
    refused = await expect_error(
        ann.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=grown)), Code.RESOURCE_EXHAUSTED
    )
    assert quota_info(refused)["resource"] == "bytes"
    got = await ann.auth.ListUsers(accounts_pb2.ListUsersRequest(tenant_id="team-a"))
    assert [list(u.spec.groups) for u in got.items if u.metadata.name == "u0"] == [[]]

    # Shrinking and deleting are always admitted; a platform administrator is never refused.
    await ann.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name="u1"))
    await platform.root.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=grown))


async def revoked_records(platform: Platform) -> int:
    return len(await stored(platform, "revoked"))


async def answer(client: Client) -> tuple[grpc.StatusCode, str]:
    try:
        await client.clusters.List(cluster_pb2.ListClustersRequest())
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return Code.OK, ""


async def test_a_login_logout_loop_stores_a_bounded_number_of_revocations(secured: Start) -> None:
    bound = 5
    platform = await secured(QuotaConfig(), max_revocations_per_user=bound)
    for name in ("lou", "mia"):
        await platform.add_user(name, "team-a")
        await platform.bind(binding(f"{name}-view", "team-a", "viewer", users=[name]))
    other_session = await platform.login("lou")  # lou's session elsewhere, never logged out
    mia = await platform.login("mia")
    await mia.auth.Logout(accounts_pb2.LogoutRequest())
    assert await revoked_records(platform) == 1

    stored = []
    for i in range(3 * bound):
        lou = await platform.login("lou")
        assert await answer(lou) == (Code.OK, "")
        await lou.auth.Logout(accounts_pb2.LogoutRequest())  # always succeeds
        code, details = await answer(lou)
        assert code == Code.UNAUTHENTICATED, (i, details)  # the token stays refused
        stored.append(await revoked_records(platform))
    # lou's records grow to the bound; the next Logout ends lou's sessions and drops them all
    # (mia's one stays), and so on: never more than the bound.
    assert stored == [1 + (i + 1) % (bound + 1) for i in range(3 * bound)]
    assert max(stored) == bound + 1

    # Past the bound, logging out ended lou's earlier sessions too (documented), not mia's
    # revocation; a new login works.
    assert await answer(other_session) == (
        Code.UNAUTHENTICATED,
        "invalid credentials: token is no longer valid: log in again",
    )
    assert (await answer(mia))[0] == Code.UNAUTHENTICATED
    assert await answer(await platform.login("lou")) == (Code.OK, "")
    assert await answer(await platform.login("mia")) == (Code.OK, "")


async def test_a_revocation_bound_below_one_is_refused_at_start(secured: Start) -> None:
    with pytest.raises(PluginError, match="accounts: max_revocations_per_user must be 1 or more"):
        await secured(QuotaConfig(), max_revocations_per_user=0)


async def test_a_revocation_a_newer_apiserver_wrote_still_revokes(secured: Start) -> None:
    """A revocation record with fields this version does not know (as a newer apiserver may
    write them during a rolling upgrade) still revokes its token: the key revokes, not the fields."""
    platform = await secured(QuotaConfig())
    await platform.add_user("lou", "team-a")
    await platform.bind(binding("lou-view", "team-a", "viewer", users=["lou"]))
    lou = await platform.login("lou")
    assert await answer(lou) == (Code.OK, "")
    payload = lou.token[len(TOKEN_PREFIX) :].partition(".")[0]
    token_id = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    apiserver = platform.api.apiserver
    record = {"expires": time.time() + 3600, "user": "lou", "a_field_of_a_newer_version": 1}
    await apiserver.store.create(f"{apiserver.prefix}/auth/revoked/{token_id}", json.dumps(record).encode())

    async def refused() -> bool:
        return (await answer(lou))[0] == Code.UNAUTHENTICATED

    await wait_for(refused, what="the token refused")


async def test_a_delete_user_that_fails_half_way_leaves_no_keys_behind(secured: Start) -> None:
    """DeleteUser that ends half way (here etcd refuses one of its deletes) leaves nothing the API
    cannot reach: deleting the user again takes the rest, and the tenant's quota is whole."""
    platform = await secured(QuotaConfig(apikeys=2))
    ann = await platform.member("ann", "team-a", "admin")
    await create_user(ann, "a1")
    await create_key(ann, "a1")
    await create_key(ann, "a1")
    store = platform.api.apiserver.store
    real_delete = store.delete
    failed: list[str] = []

    async def delete(key: str, **kwargs: Any) -> int:
        if "/auth/apikeys/" in key and not failed:
            failed.append(key)
            raise StorageUnavailable("etcd went away (test)")
        return await real_delete(key, **kwargs)

    store.delete = delete  # type: ignore[method-assign]
    try:
        await expect_error(ann.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name="a1")), Code.UNAVAILABLE)
    finally:
        store.delete = real_delete  # type: ignore[method-assign]
    assert failed
    await ann.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name="a1"))
    assert await stored(platform, "apikeys") == []
    await create_key(ann)  # the tenant's quota is whole again
    await create_key(ann)


def lane_refusal(err: BaseException | None) -> dict[str, str]:
    """The metadata of the password lane's refusal, which has a RetryInfo."""
    assert isinstance(err, grpc.aio.AioRpcError) and err.code() == Code.RESOURCE_EXHAUSTED, err
    info = detail_of(err, error_details_pb2.ErrorInfo)
    assert info.reason == "TOO_MANY_PASSWORD_HASHES" and info.domain == "tke.cloud", info
    detail_of(err, error_details_pb2.RetryInfo)
    return dict(info.metadata)


async def test_a_tenant_looping_password_hashes_holds_its_share_and_others_go_on(
    secured: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = await secured(
        QuotaConfig(), password_hashes=1, password_queue=3, password_tenant_share=3, password_user_share=2
    )
    ann = await platform.member("ann", "team-a", "admin")
    al = await platform.member("al", "team-a", "admin")
    bob = await platform.member("bob", "team-b", "admin")
    cy = await platform.member("cy", "team-c", "admin")
    lane = next(p for p in platform.api.apiserver.auth.plugins if isinstance(p, Accounts)).lane
    hasher = GatedHasher()  # every hash and check from here on is held until the gate opens
    for name in ("hash_password", "verify_password"):
        monkeypatch.setattr(accounts_module, name, hasher.wrap(getattr(accounts_module, name)))
    admitted: list[asyncio.Future[Any]] = []
    try:
        # ann's share is 2 (one hashing, one waiting), the third is refused; al, of her tenant,
        # gets the tenant's third place and no more.
        anns = [asyncio.ensure_future(create_user(ann, f"a{i}")) for i in range(3)]
        await wait_for(lambda: sum(c.done() for c in anns) == 1 and lane.waiting == 1, what="ann's share")
        als = [asyncio.ensure_future(create_user(al, f"l{i}")) for i in range(2)]
        await wait_for(lambda: sum(c.done() for c in als) == 1 and lane.waiting == 2, what="team-a's share")
        assert [lane_refusal(c.exception()) for c in anns + als if c.done()] == [
            {"scope": "user", "limit": "2"},
            {"scope": "tenant", "limit": "3"},
        ]
        admitted += [c for c in anns + als if not c.done()]
        assert hasher.started == 1
        # Another tenant's user changes its password meanwhile: admitted, the queue is then full.
        change = accounts_pb2.ChangePasswordRequest(old_password=PASSWORD, new_password="bob's new password")
        admitted.append(asyncio.ensure_future(bob.auth.ChangePassword(change)))
        await wait_for(lambda: lane.waiting == 3, what="bob's change waiting its turn")
        err = await expect_error(create_user(cy, "c1"), Code.RESOURCE_EXHAUSTED)
        assert lane_refusal(err) == {"scope": "queue", "limit": "3"}
        # A platform administrator is never refused.
        admitted.append(asyncio.ensure_future(create_user(platform.root, "r1", "team-c")))
        await wait_for(lambda: lane.waiting == 4, what="root's create waiting its turn")
    finally:
        hasher.open()
    await asyncio.gather(*admitted)
    assert hasher.most == 1  # never two hashes at once
    assert len(await user_names(ann, "team-a")) == 2 + 3  # ann, al and the three creates admitted
    await platform.login("bob", "bob's new password")
    assert "r1" in await user_names(platform.root, "team-c")
    assert lane.held == {} and lane.running == 0
