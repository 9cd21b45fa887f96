"""Clusters, machines and events (tke.platform.v1) as tkectl kinds."""

from __future__ import annotations

from typing import Any

from tke.internal.tkectl.kinds.api import ApiKind
from tke.internal.tkectl.kinds.base import Column, age, enum_text, labels_text
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc, event_pb2, event_pb2_grpc, machine_pb2, machine_pb2_grpc

NAME = Column("NAME", lambda o: o.metadata.name)
TENANT = Column("TENANT", lambda o: o.metadata.tenant_id)
AGE = Column("AGE", lambda o: age(o.metadata.creation_timestamp))
LABELS = Column("LABELS", lambda o: labels_text(o.metadata.labels))


def phase(prefix: str) -> Column:
    return Column("PHASE", lambda o: enum_text(o.status, "phase", prefix) or "Pending")


def _cluster_version(o: Any) -> str:
    return str(o.status.version or o.spec.version)


class Clusters(ApiKind):
    plural, singular, kind, aliases = "clusters", "cluster", "Cluster", ("cls",)
    message = cluster_pb2.Cluster
    stub = cluster_pb2_grpc.ClusterServiceStub
    field = "cluster"
    # Watch through WatchBatches: the events that are ready come in one message.
    methods = {v: v.capitalize() for v in ("create", "get", "list", "update", "delete")} | {"watch": "WatchBatches"}
    requests = {
        "create": cluster_pb2.CreateClusterRequest,
        "get": cluster_pb2.GetClusterRequest,
        "list": cluster_pb2.ListClustersRequest,
        "update": cluster_pb2.UpdateClusterRequest,
        "delete": cluster_pb2.DeleteClusterRequest,
        "watch": cluster_pb2.WatchClustersRequest,
    }
    columns = (
        NAME,
        Column("TYPE", lambda o: o.spec.type),
        Column("VERSION", _cluster_version),
        phase("CLUSTER_PHASE_"),
        AGE,
    )
    wide_columns = (
        TENANT,
        Column("POD-CIDR", lambda o: o.spec.network.pod_cidr),
        Column("SERVICE-CIDR", lambda o: o.spec.network.service_cidr),
        Column("MODE", lambda o: enum_text(o.spec.network, "mode", "NETWORK_MODE_") or "BRIDGE"),
        LABELS,
    )


class Machines(ApiKind):
    plural, singular, kind, aliases = "machines", "machine", "Machine", ("mc", "nodes")
    message = machine_pb2.Machine
    stub = machine_pb2_grpc.MachineServiceStub
    field = "machine"
    methods = Clusters.methods
    requests = {
        "create": machine_pb2.CreateMachineRequest,
        "get": machine_pb2.GetMachineRequest,
        "list": machine_pb2.ListMachinesRequest,
        "update": machine_pb2.UpdateMachineRequest,
        "delete": machine_pb2.DeleteMachineRequest,
        "watch": machine_pb2.WatchMachinesRequest,
    }
    filters = ("cluster",)
    filter_fields = {"cluster": "cluster_name"}
    columns = (
        NAME,
        Column("CLUSTER", lambda o: o.spec.cluster_name),
        Column("IP", lambda o: o.spec.ip),
        Column("ROLE", lambda o: enum_text(o.spec, "role", "MACHINE_ROLE_")),
        phase("MACHINE_PHASE_"),
        AGE,
    )
    wide_columns = (TENANT, Column("TYPE", lambda o: o.spec.type), LABELS)


def _object(o: Any) -> str:
    ref = o.spec.involved_object
    return f"{ref.kind.lower()}/{ref.name}" if ref.kind else ref.name


class Events(ApiKind):
    plural, singular, kind, aliases = "events", "event", "Event", ("ev",)
    message = event_pb2.Event
    stub = event_pb2_grpc.EventServiceStub
    field = "event"
    # Events are recorded by controllers and expire by themselves: no delete.
    methods = {v: v.capitalize() for v in ("create", "get", "list", "update")} | {"watch": "WatchBatches"}
    requests = {
        "create": event_pb2.CreateEventRequest,
        "get": event_pb2.GetEventRequest,
        "list": event_pb2.ListEventsRequest,
        "update": event_pb2.UpdateEventRequest,
        "watch": event_pb2.WatchEventsRequest,
    }
    update_has_mask = False
    filters = ("for-kind", "for-name")
    filter_fields = {"for-kind": "involved_object_kind", "for-name": "involved_object_name"}
    columns = (
        Column("LAST SEEN", lambda o: age(o.spec.last_timestamp)),
        Column("TYPE", lambda o: enum_text(o.spec, "type", "EVENT_TYPE_").capitalize() or "Normal"),
        Column("REASON", lambda o: o.spec.reason),
        Column("OBJECT", _object),
        Column("COUNT", lambda o: str(o.spec.count)),
        Column("MESSAGE", lambda o: o.spec.message),
    )
    wide_columns = (NAME, TENANT, Column("SOURCE", lambda o: o.spec.source.component))
