"""The policy centre's binding index and kept decisions follow writes change by change: a
write in one tenant forgets that tenant's decisions only, a write that reaches every tenant
(an all-tenant binding, or a role one uses) forgets them all, and after any sequence of writes
every decision is the one a centre built from scratch makes."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from tests.support.memory_store import MemoryStore
from tke.auth.v1 import policy_pb2
from tke.internal.auth.authz import Attributes, Decision
from tke.internal.auth.identity import Identity
from tke.internal.storage.store import NotFound
from tke.plugins.authz.policy import PolicyCentre

TENANTS = ("team-a", "team-b", "team-c")
USERS = ("ann", "bob", "cid")


def _binding(tenant: str, name: str, user: str, role: str, everywhere: bool = False) -> policy_pb2.RoleBinding:
    b = policy_pb2.RoleBinding()
    b.metadata.name, b.metadata.tenant_id = name, tenant
    b.spec.role, b.spec.all_tenants = role, everywhere
    b.spec.subjects.add(kind="User", name=user)
    return b


def _role(tenant: str, name: str, verbs: list[str]) -> policy_pb2.Role:
    r = policy_pb2.Role()
    r.metadata.name, r.metadata.tenant_id = name, tenant
    r.spec.rules.add(verbs=verbs, resources=["clusters"])
    return r


class Centre:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.centre = PolicyCentre(SimpleNamespace(prefix="/t/", store=store, authority=None))

    async def put(self, obj: policy_pb2.RoleBinding | policy_pb2.Role) -> None:
        is_binding = isinstance(obj, policy_pb2.RoleBinding)
        registry = self.centre.bindings if is_binding else self.centre.roles
        key = registry.key(obj.metadata.tenant_id, obj.metadata.name)
        value = obj.SerializeToString()  # what the registry stores: these carry no resource_version
        try:
            current = await self.store.get(key)
        except NotFound:
            item = await self.store.create(key, value)
        else:
            item = await self.store.update(key, value, expected_revision=current.mod_revision)
        await (self.centre._binding_mirror if is_binding else self.centre._role_mirror).wait_for(item.mod_revision)

    async def delete(self, tenant: str, name: str) -> None:
        """Delete a binding if it is there."""
        key = self.centre.bindings.key(tenant, name)
        try:
            current = await self.store.get(key)
        except NotFound:
            return
        revision = await self.store.delete(key, expected_revision=current.mod_revision)
        await self.centre._binding_mirror.wait_for(revision)

    async def may(self, user: str, tenant: str, verb: str = "get") -> bool:
        attributes = Attributes(Identity(user=user, tenant_id=tenant), verb, "clusters", "c1", tenant)
        return (await self.centre.authorize(attributes))[0] is Decision.ALLOW


@pytest.fixture
async def centre() -> AsyncIterator[Centre]:
    c = Centre(MemoryStore(progress_interval=0.05))
    await c.centre.start()
    yield c
    await c.centre.stop()


async def test_a_write_in_one_tenant_keeps_the_others_decisions(centre: Centre) -> None:
    await centre.put(_binding("team-b", "view", "bob", "viewer"))
    assert await centre.may("bob", "team-b")
    assert not await centre.may("ann", "team-a")
    kept_b = dict(centre.centre._decisions["team-b"])

    await centre.put(_binding("team-a", "view", "ann", "viewer"))

    assert "team-a" not in centre.centre._decisions  # forgotten: the next decision sees the write
    assert centre.centre._decisions["team-b"] == kept_b
    assert await centre.may("ann", "team-a")


async def test_writes_that_reach_every_tenant_forget_every_tenants_decisions(centre: Centre) -> None:
    # A role of team-a, bound everywhere: its rules apply in every tenant.
    await centre.put(_role("team-a", "ops", ["list"]))
    await centre.put(_binding("team-a", "ops-everywhere", "cid", "ops", everywhere=True))
    assert not await centre.may("cid", "team-b")
    await centre.put(_role("team-a", "ops", ["list", "get"]))
    assert await centre.may("cid", "team-b")

    # A tenant's own binding turned into an all-tenant one, and back.
    await centre.put(_binding("team-a", "view", "ann", "viewer"))
    assert not await centre.may("ann", "team-c")
    await centre.put(_binding("team-a", "view", "ann", "viewer", everywhere=True))
    assert await centre.may("ann", "team-c")
    await centre.put(_binding("team-a", "view", "ann", "viewer"))
    assert not await centre.may("ann", "team-c")
    assert await centre.may("ann", "team-a")


async def test_any_sequence_of_writes_decides_as_a_fresh_centre() -> None:
    rng = random.Random(7)
    store = MemoryStore(progress_interval=0.05)
    live = Centre(store)
    await live.centre.start()
    try:
        for step in range(300):
            tenant, name = rng.choice(TENANTS), f"b{rng.randrange(6)}"
            what = rng.random()
            if what < 0.15:
                await live.delete(tenant, name)
            elif what < 0.35:
                await live.put(_role(tenant, f"r{rng.randrange(2)}", rng.sample(["get", "list", "delete"], 2)))
            else:
                role = rng.choice(["viewer", "editor", "r0", "r1"])
                await live.put(_binding(tenant, name, rng.choice(USERS), role, everywhere=rng.random() < 0.2))
            # Decide a few now, so that kept decisions are there for the next write to forget.
            for _ in range(3):
                await live.may(rng.choice(USERS), rng.choice(TENANTS), rng.choice(["get", "delete"]))
            if step % 25 == 24:
                fresh = Centre(store)
                await fresh.centre.start()
                try:
                    for user in USERS:
                        for tenant in TENANTS:
                            for verb in ("get", "list", "delete"):
                                assert await live.may(user, tenant, verb) == await fresh.may(user, tenant, verb), (
                                    step,
                                    user,
                                    tenant,
                                    verb,
                                )
                finally:
                    await fresh.centre.stop()
    finally:
        await live.centre.stop()
