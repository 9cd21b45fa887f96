"""The kinds the apiserver stores, and what is special about each."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from tke.internal.apiserver import validation
from tke.internal.apiserver.credential_validation import validate_credential, validate_credential_status
from tke.internal.apiserver.event_validation import validate_event, validate_event_status
from tke.internal.apiserver.registry import Kind, Registry
from tke.internal.rpc import errors
from tke.internal.storage.store import Guard, NotFound
from tke.platform.v1 import cluster_pb2, credential_pb2, event_pb2, machine_pb2

CLUSTERS: Kind[cluster_pb2.Cluster] = Kind(
    name="cluster",
    plural="clusters",
    message=cluster_pb2.Cluster,
    validate=validation.validate_cluster,
    validate_status=validation.validate_cluster_status,
    immutable_spec_fields=("type",),
)


def machine_kind(clusters: Registry[cluster_pb2.Cluster]) -> Kind[machine_pb2.Machine]:
    """Machines reference a cluster of their tenant that exists and is not being deleted; the
    machine's create is guarded on the cluster's revision, so a racing cluster delete cannot
    leave an orphan."""

    async def cluster_guard(machine: machine_pb2.Machine, tenant: str) -> Sequence[Guard]:
        name = machine.spec.cluster_name
        key = clusters.key(tenant, name)
        try:
            item = await clusters.store.get(key)
        except NotFound:
            raise errors.precondition(
                "CLUSTER", f"clusters/{name}", f'cluster "{name}" does not exist', grpc.StatusCode.FAILED_PRECONDITION
            ) from None
        if clusters.decode(item).metadata.HasField("deletion_timestamp"):
            raise errors.precondition(
                "CLUSTER", f"clusters/{name}", f'cluster "{name}" is being deleted', grpc.StatusCode.FAILED_PRECONDITION
            )
        return [Guard(key, item.mod_revision)]

    return Kind(
        name="machine",
        plural="machines",
        message=machine_pb2.Machine,
        validate=validation.validate_machine,
        validate_status=validation.validate_machine_status,
        immutable_spec_fields=("type", "cluster_name"),
        create_guards=cluster_guard,
    )


# Events expire through their store (see app.py: an ExpiringStore under the event registry).
EVENTS: Kind[event_pb2.Event] = Kind(
    name="event",
    plural="events",
    message=event_pb2.Event,
    validate=validate_event,
    validate_status=validate_event_status,
)


# Secrets of the clusters the platform installs: created once, read and deleted by platform
# administrators only (ResourceAPI(admins_only=True) in app.py); no spec field is updatable.
CREDENTIALS: Kind[credential_pb2.ClusterCredential] = Kind(
    name="cluster_credential",
    plural="clustercredentials",
    message=credential_pb2.ClusterCredential,
    validate=validate_credential,
    validate_status=validate_credential_status,
    updatable_paths=(),
)
