"""Hostile input to every public RPC: hypothesis builds random request messages from each
method's descriptor (strings with odd characters, extreme numbers, deep nesting, random
enums) and sends them to a real apiserver (clusters, machines, events, policies, accounts) and
a real tke-ipamd. Every answer must be a success or a client error with a message; never
INTERNAL or UNKNOWN, never a Python traceback, never a hang. The servers stay healthy
afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.apiserver import ThreadedApiserver, local_config
from tests.support.etcd import EtcdProcess
from tests.support.ipamd_daemon import IpamdDaemon
from tests.support.rpc import health_check
from tke.auth.v1 import accounts_pb2, policy_pb2
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2
from tke.platform.v1 import cluster_pb2, event_pb2, machine_pb2

BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
TEXT = st.one_of(
    st.sampled_from(["", "a", "default", "*", "10.0.0.0/8", "1.2.3.4", "../..", "a" * 300, "é", "\x00", "x/y"]),
    st.text(max_size=40),
)
SCALARS: dict[int, Any] = {
    FieldDescriptor.TYPE_STRING: TEXT,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=40),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=True),
}
for t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
    SCALARS[t] = st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1))
for t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
    SCALARS[t] = st.one_of(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]), st.integers(-(2**63), 2**63 - 1))
for t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
    SCALARS[t] = st.integers(0, 2**32 - 1)
for t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
    SCALARS[t] = st.integers(0, 2**64 - 1)


def fill(draw: Any, msg: Any, depth: int) -> None:
    for field in msg.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if depth < 4:
                value_field = field.message_type.fields_by_name["value"]
                for _ in range(draw(st.integers(0, 3))):
                    key = draw(TEXT)
                    if value_field.message_type is None:
                        getattr(msg, field.name)[key] = draw(value_of(value_field))
                    else:
                        fill(draw, getattr(msg, field.name)[key], depth + 1)
            continue
        if field.message_type is not None:
            if depth >= 4 or field.message_type.full_name.startswith("google.protobuf."):
                continue
            if field.is_repeated:
                for _ in range(draw(st.integers(0, 3))):
                    fill(draw, getattr(msg, field.name).add(), depth + 1)
            else:
                fill(draw, getattr(msg, field.name), depth + 1)
            continue
        if field.is_repeated:
            getattr(msg, field.name).extend(draw(st.lists(value_of(field), max_size=4)))
        else:
            setattr(msg, field.name, draw(value_of(field)))


def value_of(field: d.FieldDescriptor) -> Any:
    if field.enum_type is not None:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 100))
    return SCALARS[field.type]


@st.composite
def requests(draw: Any, method: d.MethodDescriptor) -> Any:
    msg = message_factory.GetMessageClass(method.input_type)()
    fill(draw, msg, 0)
    return msg


def methods(*services: d.ServiceDescriptor) -> list[d.MethodDescriptor]:
    return [m for s in services for m in s.methods]


APISERVER_METHODS = methods(
    cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"],
    machine_pb2.DESCRIPTOR.services_by_name["MachineService"],
    event_pb2.DESCRIPTOR.services_by_name["EventService"],
    policy_pb2.DESCRIPTOR.services_by_name["PolicyService"],
    accounts_pb2.DESCRIPTOR.services_by_name["AuthService"],
)
IPAM_METHODS = methods(ipam_pb2.DESCRIPTOR.services_by_name["IPAMService"])


def call(
    channel: grpc.Channel, method: d.MethodDescriptor, request: Any, metadata: tuple[tuple[str, str], ...]
) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_class = message_factory.GetMessageClass(method.output_type)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                          response_deserializer=response_class.FromString)  # fmt: skip
            responses = stream(request, metadata=metadata, timeout=3)
            for _ in zip(range(3), responses, strict=False):
                pass
            responses.cancel()
        else:
            unary = channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                        response_deserializer=response_class.FromString)  # fmt: skip
            unary(request, metadata=metadata, timeout=30)
    except grpc.RpcError as err:
        code = err.code()
        if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED) and method.server_streaming:
            return  # we ended the stream ourselves, or it was waiting for changes
        assert code not in BAD, f"{path}: {code.name}: {err.details()}"
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{path} hung"
        assert "Traceback" not in (err.details() or ""), path
        assert err.details(), f"{path}: {code.name} without a message"


@pytest.fixture(scope="module")
def apiserver_channel(etcd: EtcdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    os.environ["TKE_FUZZ_SECRET"] = "z" * 40
    tokens = tmp_path_factory.mktemp("fuzz") / "tokens.csv"
    tokens.write_text("fuzz-admin,fuzzer,u0,tke:platform-admins,default\n")
    auth = AuthConfig(
        authenticators=[
            PluginConfig("token-file", {"path": str(tokens)}),
            PluginConfig("accounts", {"secret_env": "TKE_FUZZ_SECRET"}),
        ],
        authorizers=[PluginConfig("policy")],
    )
    config = replace(local_config(EtcdConfig(endpoints=[etcd.endpoint], prefix="/fuzz")), auth=auth)
    with ThreadedApiserver(config) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        yield channel
        resp = health_check(channel)(health_pb2.HealthCheckRequest(), timeout=30)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()


@pytest.fixture(scope="module")
def ipamd_channel(etcd: EtcdProcess) -> Iterator[grpc.Channel]:
    with IpamdDaemon([etcd.endpoint], "/fuzz-ipam") as ipamd:
        channel = grpc.insecure_channel(ipamd.target)
        yield channel
        resp = health_check(channel)(health_pb2.HealthCheckRequest(), timeout=30)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()


SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.mark.parametrize("method", APISERVER_METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_apiserver_rpcs_survive_random_requests(apiserver_channel: grpc.Channel, method: d.MethodDescriptor) -> None:
    # Mostly as a platform administrator, so that the handlers see the input; sometimes with
    # no or broken credentials.
    @SETTINGS
    @given(request=requests(method), token=st.sampled_from(["fuzz-admin"] * 4 + ["", "tke1.x.y", "tkeak.a.b.c"]))
    def run(request: Any, token: str) -> None:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        call(apiserver_channel, method, request, metadata)

    run()


@pytest.mark.parametrize("method", IPAM_METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_ipamd_rpcs_survive_random_requests(ipamd_channel: grpc.Channel, method: d.MethodDescriptor) -> None:
    @SETTINGS
    @given(request=requests(method))
    def run(request: Any) -> None:
        call(ipamd_channel, method, request, ())

    run()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=64))
def test_bytes_that_are_no_message_are_invalid_argument(apiserver_channel: grpc.Channel, data: bytes) -> None:
    for path in ("/tke.platform.v1.ClusterService/Get", "/tke.platform.v1.ClusterService/Watch"):
        identity: grpc.UnaryUnaryMultiCallable[bytes, bytes] = apiserver_channel.unary_unary(path)
        if path.endswith("Watch"):
            stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = apiserver_channel.unary_stream(path)
            try:
                for _ in zip(
                    range(1), stream(data, metadata=(("authorization", "Bearer fuzz-admin"),), timeout=3), strict=False
                ):
                    pass
            except grpc.RpcError as err:
                assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED), (
                    err.details()
                )
                assert "Traceback" not in (err.details() or "") and "DecodeError" not in (err.details() or "")
            continue
        try:
            identity(data, metadata=(("authorization", "Bearer fuzz-admin"),), timeout=30)
        except grpc.RpcError as err:
            assert err.code() not in BAD, (err.code(), err.details())
            assert "DecodeError" not in (err.details() or "")
