"""The EventService and the recorder: a repeated event is counted, not duplicated; List
filters by object; Watch streams new, counted and expired events; events expire after the
apiserver's event_ttl; an invalid event is refused field by field."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support.apiserver import Running, cluster, local_config, start, stop
from tests.support.rpc import status_of
from tests.support.waiting import wait_for
from tke.internal.controller.client import EVENTS, ApiClient
from tke.internal.controller.events import NORMAL, WARNING, ApiRecorder, event_name, make_record
from tke.internal.storage.etcd import EtcdConfig
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, event_pb2, event_pb2_grpc

pytestmark = pytest.mark.timeout(60)


async def test_repeats_are_counted_and_list_filters_by_object(api: Running) -> None:
    c = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("ev")))
    recorder = ApiRecorder(ApiClient(EVENTS, api.channel), "test")
    recorder.start()
    for _ in range(3):
        recorder.record(c, "Cluster", WARNING, "StepRetrying", "step X failed")
    recorder.record(c, "Cluster", NORMAL, "StepSucceeded", "step X succeeded")
    await recorder.stop()
    events = event_pb2_grpc.EventServiceStub(api.channel)
    listed = await events.List(event_pb2.ListEventsRequest(involved_object_kind="Cluster", involved_object_name="ev"))
    by_reason = {e.spec.reason: e for e in listed.items}
    assert set(by_reason) == {"StepRetrying", "StepSucceeded"}
    retrying = by_reason["StepRetrying"]
    assert retrying.spec.count == 3 and retrying.spec.type == event_pb2.EVENT_TYPE_WARNING
    assert retrying.spec.involved_object.uid == c.metadata.uid
    assert retrying.spec.first_timestamp.ToNanoseconds() <= retrying.spec.last_timestamp.ToNanoseconds()
    assert retrying.spec.source.component == "test"
    assert retrying.metadata.name == event_name(make_record(c, "Cluster", WARNING, "StepRetrying", "step X failed"))
    other = await events.List(event_pb2.ListEventsRequest(involved_object_name="someone-else"))
    assert list(other.items) == []


async def test_events_expire_and_watchers_see_them_come_and_go(etcd_config: EtcdConfig) -> None:
    api = await start(local_config(etcd_config, event_ttl=1.0))
    try:
        c = await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("short")))
        events = event_pb2_grpc.EventServiceStub(api.channel)
        stream = events.Watch(event_pb2.WatchEventsRequest())
        seen: list[int] = []
        established = asyncio.Event()

        async def watch() -> None:
            async for e in stream:
                if e.type != meta_pb2.WATCH_EVENT_TYPE_BOOKMARK:
                    seen.append(e.type)
                else:
                    established.set()  # the initial state is through: changes from here on are events

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(established.wait(), 30)
        recorder = ApiRecorder(ApiClient(EVENTS, api.channel), "test")
        recorder.start()
        recorder.record(c, "Cluster", NORMAL, "PhaseChanged", "phase RUNNING")
        recorder.record(c, "Cluster", NORMAL, "PhaseChanged", "phase RUNNING")
        await recorder.stop()

        async def expired() -> bool:
            return meta_pb2.WATCH_EVENT_TYPE_DELETED in seen

        await wait_for(expired)
        assert seen == [
            meta_pb2.WATCH_EVENT_TYPE_ADDED,
            meta_pb2.WATCH_EVENT_TYPE_MODIFIED,
            meta_pb2.WATCH_EVENT_TYPE_DELETED,
        ]
        assert list((await events.List(event_pb2.ListEventsRequest())).items) == []
        stream.cancel()
        watcher.cancel()
    finally:
        await stop(api)


async def test_an_invalid_event_is_refused_field_by_field(api: Running) -> None:
    events = event_pb2_grpc.EventServiceStub(api.channel)
    bad = event_pb2.Event()
    bad.metadata.name = "e1"
    bad.spec.involved_object.kind = "Cluster"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await events.Create(event_pb2.CreateEventRequest(event=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = status_of(err.value)
    assert status is not None
    detail = error_details_pb2.BadRequest()
    status.details[0].Unpack(detail)
    fields = {v.field for v in detail.field_violations}
    assert fields == {"event.spec.involved_object.name", "event.spec.reason"}
    assert {v.field: v.description for v in detail.field_violations}["event.spec.reason"].startswith("is required")

    # A reason that is there but no CamelCase word is said to be wrong, not missing.
    bad.spec.involved_object.name, bad.spec.reason, bad.spec.involved_object.kind = "c1", "step failed", "cluster-x"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await events.Create(event_pb2.CreateEventRequest(event=bad))
    status = status_of(err.value)
    assert status is not None
    status.details[0].Unpack(detail)
    said = {v.field: v.description for v in detail.field_violations}
    assert said["event.spec.reason"].startswith("must be a CamelCase reason such as StepSucceeded"), said
    assert said["event.spec.involved_object.kind"].startswith("must be a CamelCase kind"), said
