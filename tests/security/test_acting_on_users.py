"""Rule: a caller acts on a user (makes it an API key, resets its password, disables, deletes it,
lists its keys, creates it, changes its groups) only holding every privilege that user holds.
A tenant admin can never take over a platform administrator, the bootstrap administrator, or a
user with rights in another tenant; it still manages the ordinary members of its tenant."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
from google.rpc import error_details_pb2

from tests.security.platform import PASSWORD, ROOT, ROOT_PASSWORD, Client, Platform, binding, role, user
from tests.support.rpc import detail_of, expect_error
from tke.auth.v1 import accounts_pb2, policy_pb2
from tke.internal.auth.identity import PLATFORM_ADMINS
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode
NEW_PASSWORD = "an attacker's new password"


def escalation(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    info: error_details_pb2.ErrorInfo = detail_of(err, error_details_pb2.ErrorInfo)
    assert info.reason == "PRIVILEGE_ESCALATION", info
    return info


async def takeover_attempts(attacker: Client, target: str, code: grpc.StatusCode) -> list[grpc.aio.AioRpcError]:
    """Every user-targeted call an attacker would try, each expected to end with `code`."""
    disable = accounts_pb2.UpdateUserRequest(user=user(target, disabled=True))
    calls: list[Awaitable[Any]] = [
        attacker.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(user=target, description="backdoor")),
        attacker.auth.ChangePassword(accounts_pb2.ChangePasswordRequest(name=target, new_password=NEW_PASSWORD)),
        attacker.auth.UpdateUser(disable),
        attacker.auth.ListAPIKeys(accounts_pb2.ListAPIKeysRequest(user=target)),
        attacker.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name=target)),
    ]
    return [await expect_error(call, code) for call in calls]


async def untouched(platform: Platform, name: str, password: str = PASSWORD) -> None:
    """The user still signs in with its own password, has no key it did not make, is enabled."""
    client = await platform.login(name, password)
    keys = await client.auth.ListAPIKeys(accounts_pb2.ListAPIKeysRequest())
    assert not [k for k in keys.keys if k.description == "backdoor"]


async def test_a_tenant_admin_cannot_take_over_anyone_holding_more(platform: Platform) -> None:
    ann = await platform.member("ann", "team-a", "admin")  # the attacker: admin of team-a
    await platform.add_user("ops", "team-a", groups=[PLATFORM_ADMINS])  # a platform admin living in team-a
    await platform.add_user("carol", "team-a")  # an ordinary member of team-a ...
    await platform.bind(binding("carol-b", "team-b", "editor", users=["carol"]))  # ... with rights in team-b

    for target in ("ops", "carol"):
        for err in await takeover_attempts(ann, target, Code.PERMISSION_DENIED):
            info = escalation(err)
            assert info.metadata["user"] == "ann"
            assert target in (err.details() or "")
    await untouched(platform, "ops")
    await untouched(platform, "carol")

    # The bootstrap administrator lives in a tenant ann has no rights in: it does not exist for
    # her, exactly like a user that does not exist.
    for err, ghost in zip(
        await takeover_attempts(ann, ROOT, Code.NOT_FOUND),
        await takeover_attempts(ann, "no-such-user", Code.NOT_FOUND),
        strict=True,
    ):
        assert (err.details() or "").replace(ROOT, "X") == (ghost.details() or "").replace("no-such-user", "X")
    # An admin of the bootstrap administrator's own tenant holds less than it, too.
    dan = await platform.member("dan", "default", "admin")
    for err in await takeover_attempts(dan, ROOT, Code.PERMISSION_DENIED):
        escalation(err)
    await untouched(platform, ROOT, ROOT_PASSWORD)

    # A key ops made for itself cannot be deleted by ann either (a denial of service).
    ops = await platform.login("ops")
    key = await ops.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(description="ops automation"))
    await expect_error(ann.auth.DeleteAPIKey(accounts_pb2.DeleteAPIKeyRequest(id=key.key.id)), Code.PERMISSION_DENIED)
    await Client(platform.api, key.secret).clusters.List(cluster_pb2.ListClustersRequest())

    # What ann may do: everything above on an ordinary member of her tenant.
    await platform.member("dave", "team-a", "viewer")
    made = await ann.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(user="dave", description="for dave"))
    await Client(platform.api, made.secret).clusters.List(cluster_pb2.ListClustersRequest())
    await ann.auth.ChangePassword(accounts_pb2.ChangePasswordRequest(name="dave", new_password=NEW_PASSWORD))
    await platform.login("dave", NEW_PASSWORD)
    disabled = await ann.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=user("dave", disabled=True)))
    assert disabled.spec.disabled
    await ann.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name="dave"))


async def test_no_user_is_made_or_changed_into_more_than_its_maker_holds(platform: Platform) -> None:
    ann = await platform.member("ann", "team-a", "admin")
    # Rights already waiting for a user name, or for a group, in another tenant.
    await platform.bind(binding("future-b", "team-b", "editor", users=["future"]))
    await platform.bind(binding("devs-b", "team-b", "editor", groups=["b-devs"]))

    def create(u: accounts_pb2.User) -> Awaitable[Any]:
        return ann.auth.CreateUser(accounts_pb2.CreateUserRequest(user=u, password=PASSWORD))

    for probe in (
        user("sneaky", "team-a", groups=[PLATFORM_ADMINS]),
        user("future", "team-a"),
        user("sneaky", "team-a", groups=["b-devs"]),
    ):
        escalation(await expect_error(create(probe), Code.PERMISSION_DENIED))
    await expect_error(create(user("sneaky", "team-b")), Code.PERMISSION_DENIED)
    listed = await platform.root.auth.ListUsers(accounts_pb2.ListUsersRequest(tenant_id="*"))
    assert {u.metadata.name for u in listed.items} == {ROOT, "ann"}

    # Giving an existing member such groups is refused the same way, and changes nothing.
    await platform.member("erin", "team-a", groups=["a-devs"])
    for groups in ([PLATFORM_ADMINS], ["b-devs"]):
        change = user("erin", groups=groups)
        escalation(
            await expect_error(ann.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=change)), Code.PERMISSION_DENIED)
        )
    selfish = accounts_pb2.UpdateUserRequest(user=user("ann", groups=[PLATFORM_ADMINS]))
    escalation(await expect_error(ann.auth.UpdateUser(selfish), Code.PERMISSION_DENIED))
    listed = await platform.root.auth.ListUsers(accounts_pb2.ListUsersRequest(tenant_id="team-a"))
    assert {u.metadata.name: list(u.spec.groups) for u in listed.items} == {"ann": [], "erin": ["a-devs"]}
    # A user's tenant never changes: naming one ann has no rights in finds nothing, and even
    # a platform administrator cannot move a user.
    moved = accounts_pb2.UpdateUserRequest(user=user("erin", "team-b"))
    await expect_error(ann.auth.UpdateUser(moved), Code.NOT_FOUND)
    err = await expect_error(platform.root.auth.UpdateUser(moved), Code.INVALID_ARGUMENT)
    assert "tenant" in (err.details() or "")

    # Legitimate: a member with a group that carries nothing beyond ann's tenant.
    await create(user("frank", "team-a", groups=["a-devs"]))
    await ann.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=user("frank", groups=["a-devs", "a-ops"])))


async def test_privileges_are_compared_rule_by_rule(platform: Platform) -> None:
    """A user manager whose own role covers only accounts may manage users holding nothing else,
    and nobody holding a right it lacks."""
    manager_role = role("user-manager", "team-a", (["*"], ["users", "passwords", "apikeys"]))
    await platform.root.policy.CreateRole(policy_pb2.CreateRoleRequest(role=manager_role))
    lim = await platform.member("lim", "team-a", "user-manager")
    await platform.member("ann", "team-a", "admin")
    await platform.member("vic", "team-a", "viewer")
    await platform.member("nora", "team-a")  # no binding at all
    for target in ("ann", "vic"):
        reset = accounts_pb2.ChangePasswordRequest(name=target, new_password=NEW_PASSWORD)
        err = escalation(await expect_error(lim.auth.ChangePassword(reset), Code.PERMISSION_DENIED))
        assert err.metadata["tenant"] == "team-a" and err.metadata["source"]
    await untouched(platform, "vic")
    await lim.auth.ChangePassword(accounts_pb2.ChangePasswordRequest(name="nora", new_password=NEW_PASSWORD))
    await platform.login("nora", NEW_PASSWORD)
