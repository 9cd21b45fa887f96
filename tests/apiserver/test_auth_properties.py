"""Property tests: random credentials and metadata never crash the auth chain; every answer is
OK, UNAUTHENTICATED or PERMISSION_DENIED, never INTERNAL, and never echoes the secret sent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.apiserver import ThreadedApiserver, local_config
from tests.support.etcd import EtcdProcess
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

ALLOWED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)
tokens = st.one_of(
    header_value,
    st.builds(lambda s: "tke1." + s, header_value),
    st.builds(lambda s: "tkeak." + s, header_value),
    st.builds(lambda a, b: f"tke1.{a}.{b}", header_value, header_value),
)


@pytest.fixture(scope="module")
def stub(etcd: EtcdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster_pb2_grpc.ClusterServiceStub]:
    os.environ["TKE_PROP_SECRET"] = "k" * 40
    os.environ["TKE_PROP_GATEWAY"] = "g" * 40
    tokens_file = Path(tmp_path_factory.mktemp("tok")) / "tokens.csv"
    tokens_file.write_text("static-token,static,u1,dev,default\n")
    auth = AuthConfig(
        authenticators=[
            PluginConfig("gateway", {"secret_env": "TKE_PROP_GATEWAY"}),
            PluginConfig("accounts", {"secret_env": "TKE_PROP_SECRET"}),
            PluginConfig("token-file", {"path": str(tokens_file)}),
        ],
        authorizers=[PluginConfig("policy")],
    )
    config = replace(local_config(EtcdConfig(endpoints=[etcd.endpoint], prefix="/auth-props")), auth=auth)
    with ThreadedApiserver(config) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        yield cluster_pb2_grpc.ClusterServiceStub(channel)
        channel.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    token=tokens,
    scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
    extra=st.dictionaries(
        st.sampled_from(
            ["x-tke-account", "x-tke-app-id", "x-tke-timestamp", "x-tke-nonce", "x-tke-signature", "x-request-id"]
        ),
        header_value,
        max_size=5,
    ),
)
def test_random_credentials_never_crash_the_chain(
    stub: cluster_pb2_grpc.ClusterServiceStub, token: str, scheme: str, extra: dict[str, str]
) -> None:
    metadata = (("authorization", scheme + token), *extra.items())
    try:
        stub.List(cluster_pb2.ListClustersRequest(), metadata=metadata, timeout=10)
    except grpc.RpcError as err:
        assert err.code() in ALLOWED, (err.code(), err.details())
        if len(token) >= 8:
            assert token not in (err.details() or "")
