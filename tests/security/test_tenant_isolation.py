"""Rule: a call naming an object of a tenant the caller has no rights in is NOT_FOUND, the same
answer whether the object exists or not, for every kind (clusters, machines, events, roles,
role bindings, users): another tenant cannot even learn what names exist. Where the caller
does have rights (its own tenant, or a binding in the other one), a verb it lacks is
PERMISSION_DENIED, which tells nothing either, as it does not depend on the object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2

from tests.security.platform import Client, Platform, binding, role, user
from tests.support.apiserver import cluster, machine
from tests.support.rpc import bad_request_fields, detail_of, expect_error
from tke.auth.v1 import accounts_pb2, policy_pb2
from tke.platform.v1 import cluster_pb2, event_pb2, machine_pb2

Code = grpc.StatusCode
TENANT = "team-a"
Probe = Callable[[Client, str], Awaitable[Any]]


def _in_tenant(obj: Any, name: str) -> Any:
    obj.metadata.name = name
    obj.metadata.tenant_id = TENANT
    return obj


def _event(name: str) -> event_pb2.Event:
    e: event_pb2.Event = _in_tenant(event_pb2.Event(), name)
    e.spec.involved_object.kind, e.spec.involved_object.name = "Cluster", "a1"
    e.spec.reason, e.spec.type = "Probed", event_pb2.EVENT_TYPE_NORMAL
    return e


# Every call naming one object of team-a, by kind: (what it names, how to call it).
PROBES: dict[str, list[Probe]] = {
    "cluster": [
        lambda c, n: c.clusters.Get(cluster_pb2.GetClusterRequest(name=n, tenant_id=TENANT)),
        lambda c, n: c.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=_in_tenant(cluster(n), n))),
        lambda c, n: c.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=_in_tenant(cluster(n), n))),
        lambda c, n: c.clusters.Delete(cluster_pb2.DeleteClusterRequest(name=n, tenant_id=TENANT)),
    ],
    "machine": [
        lambda c, n: c.machines.Get(machine_pb2.GetMachineRequest(name=n, tenant_id=TENANT)),
        lambda c, n: c.machines.Update(machine_pb2.UpdateMachineRequest(machine=_in_tenant(machine(n, "a1"), n))),
        lambda c, n: c.machines.Delete(machine_pb2.DeleteMachineRequest(name=n, tenant_id=TENANT)),
    ],
    "event": [
        lambda c, n: c.events.Get(event_pb2.GetEventRequest(name=n, tenant_id=TENANT)),
        lambda c, n: c.events.Update(event_pb2.UpdateEventRequest(event=_event(n))),
    ],
    "role": [
        lambda c, n: c.policy.GetRole(policy_pb2.GetRoleRequest(name=n, tenant_id=TENANT)),
        lambda c, n: c.policy.UpdateRole(policy_pb2.UpdateRoleRequest(role=role(n, TENANT, (["get"], ["clusters"])))),
        lambda c, n: c.policy.DeleteRole(policy_pb2.DeleteRoleRequest(name=n, tenant_id=TENANT)),
    ],
    "rolebinding": [
        lambda c, n: c.policy.GetRoleBinding(policy_pb2.GetRoleBindingRequest(name=n, tenant_id=TENANT)),
        lambda c, n: c.policy.UpdateRoleBinding(
            policy_pb2.UpdateRoleBindingRequest(role_binding=binding(n, TENANT, "viewer", users=["x"]))
        ),
        lambda c, n: c.policy.DeleteRoleBinding(policy_pb2.DeleteRoleBindingRequest(name=n, tenant_id=TENANT)),
    ],
    "user": [
        lambda c, n: c.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name=n)),
        lambda c, n: c.auth.UpdateUser(accounts_pb2.UpdateUserRequest(user=user(n, disabled=True))),
        lambda c, n: c.auth.ChangePassword(accounts_pb2.ChangePasswordRequest(name=n, new_password="p" * 20)),
        lambda c, n: c.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(user=n)),
        lambda c, n: c.auth.ListAPIKeys(accounts_pb2.ListAPIKeysRequest(user=n)),
    ],
}
EXISTING = {"cluster": "a1", "machine": "m1", "event": "e1", "role": "r1", "rolebinding": "b1", "user": "alice"}


async def populate(platform: Platform) -> None:
    root = platform.root
    await root.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=_in_tenant(cluster("a1"), "a1")))
    await root.machines.Create(machine_pb2.CreateMachineRequest(machine=_in_tenant(machine("m1", "a1"), "m1")))
    await root.events.Create(event_pb2.CreateEventRequest(event=_event("e1")))
    await root.policy.CreateRole(policy_pb2.CreateRoleRequest(role=role("r1", TENANT, (["get"], ["clusters"]))))
    await platform.bind(binding("b1", TENANT, "viewer", users=["nobody"]))
    await platform.add_user("alice", TENANT)


def shape(err: grpc.aio.AioRpcError, name: str) -> tuple[Any, ...]:
    """Everything an error tells, with the name asked for blanked out."""
    info = detail_of(err, error_details_pb2.ResourceInfo)
    return err.code(), (err.details() or "").replace(name, "?"), info.resource_type, info.owner


async def test_another_tenants_objects_do_not_exist_for_a_stranger(platform: Platform) -> None:
    await populate(platform)
    bert = await platform.member("bert", "team-b", "admin")  # all powers, but in team-b
    for kind, probes in PROBES.items():
        for probe in probes:
            there = await expect_error(probe(bert, EXISTING[kind]), Code.NOT_FOUND)
            missing = await expect_error(probe(bert, "no-such-name"), Code.NOT_FOUND)
            assert shape(there, EXISTING[kind]) == shape(missing, "no-such-name"), kind
    # Nothing was changed or removed.
    for kind, probe in (("cluster", PROBES["cluster"][0]), ("role", PROBES["role"][0])):
        await probe(platform.root, EXISTING[kind])
    listed = await platform.root.auth.ListUsers(accounts_pb2.ListUsersRequest(tenant_id=TENANT))
    assert [u.spec.disabled for u in listed.items if u.metadata.name == "alice"] == [False]


async def test_inside_a_reachable_tenant_a_missing_verb_is_permission_denied(platform: Platform) -> None:
    await populate(platform)
    vera = await platform.member("vera", TENANT, "viewer")  # team-a's own viewer
    bess = await platform.member("bess", "team-b", "viewer", where=TENANT)  # team-b's, with a viewer binding in team-a
    for client in (vera, bess):
        got = await client.clusters.Get(cluster_pb2.GetClusterRequest(name="a1", tenant_id=TENANT))
        assert got.metadata.name == "a1"
        for name in ("a1", "no-such-name"):
            for delete in (PROBES["cluster"][3], PROBES["machine"][2], PROBES["role"][2]):
                await expect_error(delete(client, name), Code.PERMISSION_DENIED)
        await expect_error(
            client.clusters.Get(cluster_pb2.GetClusterRequest(name="gone", tenant_id=TENANT)), Code.NOT_FOUND
        )
    # Listing or creating in a tenant without rights there stays PERMISSION_DENIED.
    bert = await platform.member("bert", "team-b", "admin")
    await expect_error(bert.clusters.List(cluster_pb2.ListClustersRequest(tenant_id=TENANT)), Code.PERMISSION_DENIED)
    await expect_error(
        bert.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=_in_tenant(cluster("x"), "x"))),
        Code.PERMISSION_DENIED,
    )


async def test_an_event_is_about_an_object_of_its_own_tenant(platform: Platform) -> None:
    """event.proto: the involved object's tenant is always the event's own. A tenant naming
    another tenant there planted events "about" that tenant's cluster, found by whoever lists
    events of every tenant by involved object."""
    await populate(platform)
    bert = await platform.member("bert", "team-b", "admin")
    planted = _event("planted")
    planted.metadata.tenant_id = ""
    planted.spec.involved_object.tenant_id = TENANT
    err = await expect_error(bert.events.Create(event_pb2.CreateEventRequest(event=planted)), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["event.spec.involved_object.tenant_id"]
    own = _event("own")
    own.metadata.tenant_id = ""
    own.spec.involved_object.tenant_id = "team-b"  # its own tenant, said out loud: fine
    stored = await bert.events.Create(event_pb2.CreateEventRequest(event=own))
    assert stored.metadata.tenant_id == "team-b"
    stored.spec.involved_object.tenant_id = TENANT  # and it cannot be moved there later
    err = await expect_error(bert.events.Update(event_pb2.UpdateEventRequest(event=stored)), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["event.spec.involved_object.tenant_id"]
    listed = await platform.root.events.List(event_pb2.ListEventsRequest(tenant_id="*"))
    assert [e.metadata.name for e in listed.items if e.spec.involved_object.tenant_id == TENANT] == []
