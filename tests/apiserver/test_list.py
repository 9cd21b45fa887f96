"""List: tenants, label selectors, pages and continue tokens, also while objects change; with
the reads answered by the watch cache and by etcd (part of the read tests, see test_reads.py)."""

from __future__ import annotations

import base64
import json
import uuid

import grpc
import pytest

from tests.support.apiserver import Running, cluster
from tests.support.rpc import bad_request_fields, expect_error
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode


@pytest.fixture
def api(read_api: Running) -> Running:
    return read_api


async def create_many(api: Running, names: list[str], labels: dict[str, str] | None = None) -> None:
    for name in names:
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster(name, labels)))


async def list_all(api: Running, page_size: int, selector: str = "") -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        page = await api.clusters.List(
            cluster_pb2.ListClustersRequest(page_size=page_size, continue_token=token, label_selector=selector)
        )
        names += [c.metadata.name for c in page.items]
        token = page.metadata.continue_token
        if not token:
            return names
        assert len(page.items) == page_size


async def test_pages_cover_everything_once_in_name_order(api: Running) -> None:
    names = [f"c{i:02d}" for i in range(23)]
    await create_many(api, names[::-1])
    assert await list_all(api, 5) == names
    assert await list_all(api, 23) == names
    assert await list_all(api, 0) == names


async def test_pages_read_at_the_first_pages_revision_while_objects_change(api: Running) -> None:
    names = [f"c{i:02d}" for i in range(12)]
    await create_many(api, names)
    first = await api.clusters.List(cluster_pb2.ListClustersRequest(page_size=4))
    seen = [c.metadata.name for c in first.items]
    # Changes after the first page: a new object before and after the cursor, a delete of an
    # unseen object, and an update of an unseen one.
    await create_many(api, ["a-new", "z-new"])
    await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="c10"))
    c7 = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="c07"))
    c7.spec.version = "1.31.0"
    await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c7))
    token = first.metadata.continue_token
    versions = {}
    while token:
        page = await api.clusters.List(cluster_pb2.ListClustersRequest(page_size=4, continue_token=token))
        assert page.metadata.resource_version == first.metadata.resource_version
        seen += [c.metadata.name for c in page.items]
        versions.update({c.metadata.name: c.spec.version for c in page.items})
        token = page.metadata.continue_token
    assert seen == names  # the snapshot: no new objects, the deleted one still there
    assert versions["c07"] == "1.30.2"
    # A fresh list sees the changes.
    now = await list_all(api, 100)
    assert "a-new" in now and "z-new" in now and "c10" not in now


async def test_selector_with_pages(api: Running) -> None:
    await create_many(api, [f"p{i}" for i in range(7)], {"env": "prod"})
    await create_many(api, [f"d{i}" for i in range(7)], {"env": "dev"})
    assert await list_all(api, 3, "env=prod") == [f"p{i}" for i in range(7)]
    assert await list_all(api, 2, "env!=prod") == [f"d{i}" for i in range(7)]
    assert await list_all(api, 2, "env in (qa)") == []


async def test_bad_page_size_and_continue_token(api: Running) -> None:
    err = await expect_error(api.clusters.List(cluster_pb2.ListClustersRequest(page_size=-1)), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["page_size"]
    await expect_error(api.clusters.List(cluster_pb2.ListClustersRequest(page_size=5001)), Code.INVALID_ARGUMENT)
    for token in ("garbage", "eyJzIjoiL290aGVyLyIsInIiOjV9"):  # the second names another prefix
        err = await expect_error(
            api.clusters.List(cluster_pb2.ListClustersRequest(continue_token=token)), Code.INVALID_ARGUMENT
        )
        assert bad_request_fields(err) == ["continue_token"]


async def test_continue_token_after_compaction_is_out_of_range(api: Running) -> None:
    await create_many(api, [f"k{i}" for i in range(6)])
    first = await api.clusters.List(cluster_pb2.ListClustersRequest(page_size=2))
    await create_many(api, ["later"])
    store = api.apiserver.store
    await store.compact(await store.current_revision())  # type: ignore[attr-defined]
    err = await expect_error(
        api.clusters.List(cluster_pb2.ListClustersRequest(page_size=2, continue_token=first.metadata.continue_token)),
        Code.OUT_OF_RANGE,
    )
    assert "start the list again" in (err.details() or "")


async def test_a_compacted_continue_token_is_out_of_range_even_when_its_kind_did_not_change(api: Running) -> None:
    """The watch cache still holds the token's state (no cluster changed), but etcd's history
    decides: once compacted, the token has expired, as it does when reads go to etcd."""
    await create_many(api, [f"u{i}" for i in range(4)])
    first = await api.clusters.List(cluster_pb2.ListClustersRequest(page_size=2))
    store = api.apiserver.store
    await store.create(f"/elsewhere/{uuid.uuid4()}", b"x")  # etcd moves on; the clusters do not
    await store.compact(await store.current_revision())  # type: ignore[attr-defined]
    err = await expect_error(
        api.clusters.List(cluster_pb2.ListClustersRequest(page_size=2, continue_token=first.metadata.continue_token)),
        Code.OUT_OF_RANGE,
    )
    assert "start the list again" in (err.details() or "")


async def test_a_continue_token_naming_a_future_revision_is_invalid_not_internal(api: Running) -> None:
    """A made-up token with a revision the store has not reached: the caller's mistake (the
    token's seal no longer holds; tests/security/test_tokens.py also seals one properly)."""
    await create_many(api, [f"f{i}" for i in range(3)])
    first = await api.clusters.List(cluster_pb2.ListClustersRequest(page_size=2))
    token = first.metadata.continue_token
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    head, fields = raw[:17], json.loads(raw[17:])  # version byte and MAC, then the position
    fields["r"] = 10**15
    forged = base64.urlsafe_b64encode(head + json.dumps(fields).encode()).decode().rstrip("=")
    err = await expect_error(
        api.clusters.List(cluster_pb2.ListClustersRequest(page_size=2, continue_token=forged)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["continue_token"]
