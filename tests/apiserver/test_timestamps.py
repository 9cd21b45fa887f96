"""Timestamps a client writes are ones protobuf defines (years 1 to 9999, nanos 0 to
999999999): one outside that range was stored as sent, and every reader that converts it
(protobuf's JSON, so `tkectl get events -o yaml` and grpcurl; Go's AsTime; ToDatetime) failed on
the whole list it came in. Probed on an Event's spec and a Cluster's status conditions."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format

from tests.support.apiserver import Running, cluster
from tests.support.rpc import bad_request_fields, expect_error
from tke.platform.v1 import cluster_pb2, event_pb2, event_pb2_grpc

Code = grpc.StatusCode
BAD = [(2**62, 0), (-(2**62), 0), (253_402_300_800, 0), (-62_135_596_801, 0), (0, -1), (0, 1_000_000_000)]


def event(name: str, seconds: int, nanos: int) -> event_pb2.Event:
    e = event_pb2.Event()
    e.metadata.name = name
    e.spec.involved_object.kind, e.spec.involved_object.name = "Cluster", "prod"
    e.spec.reason, e.spec.type = "Probed", event_pb2.EVENT_TYPE_NORMAL
    e.spec.last_timestamp.seconds, e.spec.last_timestamp.nanos = seconds, nanos
    return e


@pytest.mark.parametrize(("seconds", "nanos"), BAD)
async def test_an_event_with_a_timestamp_out_of_range_is_invalid(api: Running, seconds: int, nanos: int) -> None:
    events = event_pb2_grpc.EventServiceStub(api.channel)
    err = await expect_error(
        events.Create(event_pb2.CreateEventRequest(event=event("bad", seconds, nanos))), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["event.spec.last_timestamp"]
    stored = await events.Create(event_pb2.CreateEventRequest(event=event("good", 253_402_300_799, 999_999_999)))
    update = event("good", seconds, nanos)
    update.metadata.resource_version = stored.metadata.resource_version
    await expect_error(events.Update(event_pb2.UpdateEventRequest(event=update)), Code.INVALID_ARGUMENT)
    listed = await events.List(event_pb2.ListEventsRequest())
    json_format.MessageToJson(listed)  # what protobuf's JSON (tkectl -o yaml, grpcurl) does with it
    assert [e.metadata.name for e in listed.items] == ["good"]


@pytest.mark.parametrize(("seconds", "nanos"), BAD[:1] + BAD[-1:])
async def test_a_status_condition_with_a_timestamp_out_of_range_is_invalid(
    api: Running, seconds: int, nanos: int
) -> None:
    created = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("prod")))
    created.status.conditions.add(type="Ready", reason="Probed")
    created.status.conditions[0].last_transition_time.seconds = seconds
    created.status.conditions[0].last_transition_time.nanos = nanos
    err = await expect_error(
        api.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=created)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.status.conditions[0].last_transition_time"]
    got = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="prod"))
    assert not got.status.conditions
