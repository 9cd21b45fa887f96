"""Property tests: random names, CIDRs, labels and selectors never crash the server, and every
rejection is INVALID_ARGUMENT with a BadRequest naming a field."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.apiserver import ThreadedApiserver, local_config
from tests.support.rpc import bad_request_fields
from tke.internal.meta.labels import SelectorError, parse_selector
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

NAME_CHARS = st.characters(codec="utf-8")
names = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
    st.text(NAME_CHARS, max_size=80),
)
cidrs = st.one_of(
    st.builds(lambda ip, p: f"{ipaddress.IPv4Address(ip)}/{p}", st.integers(0, 2**32 - 1), st.integers(0, 33)),
    st.builds(lambda ip, p: f"{ipaddress.IPv6Address(ip)}/{p}", st.integers(0, 2**128 - 1), st.integers(0, 129)),
    st.text(max_size=40),
)
label_keys = st.one_of(
    st.from_regex(r"([a-z]{1,10}\.[a-z]{2,5}/)?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,10}", fullmatch=True), st.text(max_size=70)
)
labels = st.dictionaries(
    label_keys, st.one_of(st.from_regex(r"[a-z0-9]{0,10}", fullmatch=True), st.text(max_size=70)), max_size=4
)


@pytest.fixture(scope="module")
def stub(etcd_config: EtcdConfig) -> Iterator[cluster_pb2_grpc.ClusterServiceStub]:
    with ThreadedApiserver(local_config(etcd_config)) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        yield cluster_pb2_grpc.ClusterServiceStub(channel)
        channel.close()


@pytest.fixture(scope="module")
def etcd_config(etcd, tmp_path_factory: pytest.TempPathFactory) -> EtcdConfig:  # type: ignore[no-untyped-def]
    # Module scope: one apiserver for all examples, on its own prefix.
    return EtcdConfig(endpoints=[etcd.endpoint], prefix=f"/props-{tmp_path_factory.getbasetemp().name}")


def check(call: Callable[[], object]) -> None:
    try:
        call()
    except grpc.RpcError as err:
        code = err.code()
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS), (code, err.details())
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            fields = bad_request_fields(err)
            assert fields and all(fields)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, pod=cidrs, svc=cidrs, lbls=labels)
def test_random_clusters_are_stored_or_rejected_with_a_field(
    stub: cluster_pb2_grpc.ClusterServiceStub, name: str, pod: str, svc: str, lbls: dict[str, str]
) -> None:
    c = cluster_pb2.Cluster()
    c.metadata.name = name
    c.metadata.labels.update(lbls)
    c.spec.type = "baremetal"
    c.spec.network.pod_cidr = pod
    c.spec.network.service_cidr = svc
    check(lambda: stub.Create(cluster_pb2.CreateClusterRequest(cluster=c), timeout=10))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(selector=st.text(max_size=60), token=st.text(max_size=40), size=st.integers(-10, 6000))
def test_random_list_requests_never_crash(
    stub: cluster_pb2_grpc.ClusterServiceStub, selector: str, token: str, size: int
) -> None:
    request = cluster_pb2.ListClustersRequest(label_selector=selector, continue_token=token, page_size=size)
    check(lambda: stub.List(request, timeout=10))


@given(st.text(max_size=100))
def test_selector_parser_only_raises_selector_errors(text: str) -> None:
    with contextlib.suppress(SelectorError):
        parse_selector(text)
