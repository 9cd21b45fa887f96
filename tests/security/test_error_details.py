"""Security model: an error always fits the response's trailers. A client refuses trailers over
8 KiB (grpc's default) and would see RESOURCE_EXHAUSTED instead of what is wrong; probed here
as an attacker would: a hundred bad labels, one bad value a megabyte long, a name of a million
multi-byte characters, on the apiserver and on ipamd, over real gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.ipamd_daemon import IpamdDaemon
from tests.support.rpc import bad_request_fields, detail_of, expect_error
from tke.internal.rpc.errors import MAX_VIOLATIONS
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode
TRAILERS_LIMIT = 8 * 1024  # grpc's default for the metadata a client accepts


@pytest.fixture
async def api(etcd_config: EtcdConfig) -> AsyncIterator[Running]:
    running = await start(local_config(etcd_config))
    try:
        yield running
    finally:
        await stop(running)


def trailers_size(err: grpc.aio.AioRpcError) -> int:
    return sum(len(k) + len(v) for k, v in (err.trailing_metadata() or ()))


async def test_a_hundred_bad_labels_are_invalid_argument_listing_twenty(api: Running) -> None:
    c = cluster("many-bad-labels")
    c.metadata.labels.update({f"bad key {i}": "ok" for i in range(100)})
    err = await expect_error(api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c)), Code.INVALID_ARGUMENT)
    fields = bad_request_fields(err)
    assert len(fields) == MAX_VIOLATIONS
    assert all(f.startswith("cluster.metadata.labels[") for f in fields)
    assert "(and 99 more; 80 of them not listed in the details)" in (err.details() or "")
    assert trailers_size(err) < TRAILERS_LIMIT


async def test_huge_bad_values_are_clipped_in_the_error(api: Running) -> None:
    c = cluster("huge-bad-values")
    c.spec.network.pod_cidr = "x" * 1_000_000  # repeated in the description by validation
    c.metadata.annotations["bad key " + "k" * 100_000] = "v"  # the key is in the field path
    for i in range(30):
        c.metadata.labels[f"é{i}" * 3000] = "ü" * 5000  # multi-byte: percent-encoded threefold
    err = await expect_error(api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c)), Code.INVALID_ARGUMENT)
    assert trailers_size(err) < TRAILERS_LIMIT
    assert len(err.details() or "") <= 1024
    assert bad_request_fields(err), "the details still name fields"
    assert "Traceback" not in (err.details() or "")


async def test_a_megabyte_name_is_not_found_not_resource_exhausted(api: Running) -> None:
    name = "ß" * 1_000_000
    err = await expect_error(api.clusters.Get(cluster_pb2.GetClusterRequest(name=name)), Code.NOT_FOUND)
    info = detail_of(err, error_details_pb2.ResourceInfo)
    assert len(info.resource_name) <= 256
    assert trailers_size(err) < TRAILERS_LIMIT
    err = await expect_error(
        api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name=name, resource_version="x" * 500_000)),
        Code.INVALID_ARGUMENT,
    )
    assert trailers_size(err) < TRAILERS_LIMIT


async def test_ipamd_errors_fit_too(etcd_config: EtcdConfig) -> None:
    with IpamdDaemon(etcd_config.endpoints, etcd_config.prefix) as ipamd:
        async with grpc.aio.insecure_channel(ipamd.target) as channel:
            stub: ipam_pb2_grpc.IPAMServiceAsyncStub = ipam_pb2_grpc.IPAMServiceStub(channel)
            await _probe_ipamd(stub)


async def _probe_ipamd(stub: ipam_pb2_grpc.IPAMServiceAsyncStub) -> None:
    request = ipam_pb2.GarbageCollectRequest(
        node="n" * 300_000,
        valid_attachments=[ipam_pb2.Attachment(container_id="bad id " * 200, ifname="x" * 50) for _ in range(200)],
    )
    err = await expect_error(stub.GarbageCollect(request), Code.INVALID_ARGUMENT)
    assert 0 < len(bad_request_fields(err)) <= MAX_VIOLATIONS
    assert trailers_size(err) < TRAILERS_LIMIT
