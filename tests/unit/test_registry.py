"""The registry's rules over the in-memory Store fake."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.support.apiserver import cluster
from tests.support.memory_store import MemoryStore
from tke.internal.apiserver.kinds import CLUSTERS
from tke.internal.apiserver.registry import Registry
from tke.internal.meta.labels import EVERYTHING, parse_selector
from tke.internal.rpc.errors import ApiError


@pytest.fixture
def registry() -> Registry:  # type: ignore[type-arg]
    return Registry(CLUSTERS, MemoryStore(), "/t")


async def test_keys_carry_kind_tenant_and_name(registry: Registry) -> None:  # type: ignore[type-arg]
    created = await registry.create("team-a", cluster("c1"))
    item = await registry.store.get("/t/clusters/team-a/c1")
    assert registry.decode(item) == created


async def test_update_paths_and_generation(registry: Registry) -> None:  # type: ignore[type-arg]
    await registry.create("t", cluster("c1", {"a": "1"}))
    patch = cluster("c1")
    patch.spec.version = "1.31.0"
    updated = await registry.update("t", patch, field_mask_pb2.FieldMask(paths=["spec.version"]))
    assert updated.metadata.generation == 2
    assert dict(updated.metadata.labels) == {"a": "1"}
    with pytest.raises(ApiError) as info:
        await registry.update("t", patch, field_mask_pb2.FieldMask(paths=["status"]))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_pages_with_a_selector_skip_non_matching(registry: Registry) -> None:  # type: ignore[type-arg]
    for i in range(10):
        await registry.create("t", cluster(f"c{i}", {"even": str(i % 2 == 0).lower()}))
    page = await registry.list("t", parse_selector("even=true"), 2, "")
    names = [c.metadata.name for c in page.items]
    while page.continue_token:
        page = await registry.list("t", parse_selector("even=true"), 2, page.continue_token)
        names += [c.metadata.name for c in page.items]
    assert names == ["c0", "c2", "c4", "c6", "c8"]
    everything = await registry.list("t", EVERYTHING, 0, "")
    assert len(everything.items) == 10 and everything.continue_token == ""


async def test_delete_with_finalizer_then_finalizer_removal(registry: Registry) -> None:  # type: ignore[type-arg]
    c = cluster("f")
    c.metadata.finalizers.append("tke.cloud/x")
    await registry.create("t", c)
    marked = await registry.delete("t", "f", "")
    assert marked.metadata.HasField("deletion_timestamp")
    del marked.metadata.finalizers[:]
    marked.metadata.resource_version = ""
    await registry.update("t", marked, field_mask_pb2.FieldMask(paths=["metadata.finalizers"]))
    with pytest.raises(ApiError) as info:
        await registry.get("t", "f")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
