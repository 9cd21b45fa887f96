"""The kinds the apiserver stores, and what is special about each.

A machine's address is claimed by one object at a time, across every tenant: a Machine's
spec.ip or a cluster's spec.machines[].ip (`machine_ip`). So no tenant can point a provider
at a host that another object, of any tenant, already manages.

A credential_ref names a credential of the object's own tenant: it must be in the catalogue
the controller publishes (`<prefix>/credentials/<tenant>/<name>`, see
tke.internal.provider.credentials), else FAILED_PRECONDITION naming the field. An imported
cluster's api_server_url must also be one of the servers that entry pins the credential to
(`pinned_server`), else INVALID_ARGUMENT naming the URL's field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Callable, Sequence

import grpc

from tke.internal.apiserver import validation
from tke.internal.apiserver.credential_validation import validate_credential, validate_credential_status
from tke.internal.apiserver.event_validation import validate_event, validate_event_status
from tke.internal.apiserver.registry import Kind, Reference, Registry, Unique
from tke.internal.provider.addresses import server_key
from tke.internal.provider.credentials import CATALOGUE
from tke.internal.rpc import errors
from tke.internal.rpc.errors import FieldViolation
from tke.internal.storage.store import Guard, NotFound
from tke.platform.v1 import cluster_pb2, credential_pb2, event_pb2, machine_pb2

MACHINE_IPS = "machine-ips"


def machine_ip(value: str, field: str) -> list[Unique]:
    """The claim of a machine address (none for a value that is not an address: validation
    refuses those). One spelling per address: IPv6 compressed, an IPv4-mapped IPv6 address as
    its IPv4 address, so no second spelling reaches the same host."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return []
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return [Unique(f"{MACHINE_IPS}/{ip}", field, "MACHINE_IP", f"machine IP {ip}")]


def credential(tenant: str, ref: str, field: str) -> list[Reference]:
    """The catalogue entry a credential_ref names, in the object's own tenant."""
    if not ref:
        return []
    missing = f'tenant "{tenant}" has no credential "{ref}" (credentials are configured per tenant in tke-controller)'
    return [Reference(f"{CATALOGUE}/{tenant}/{ref}", field, "CREDENTIAL", missing)]


def pinned_server(url: str, ref: str) -> Callable[[bytes], FieldViolation | None]:
    """The check of an imported cluster's credential entry: its URL must be one of the servers
    the credential is pinned to (the leading controller publishes them; an entry without
    `servers` was published by a controller before the pin, and tke-controller checks)."""

    def check(value: bytes) -> FieldViolation | None:
        try:
            entry = json.loads(value or b"{}")
        except ValueError:
            return None
        servers = entry.get("servers") if isinstance(entry, dict) else None
        if not isinstance(servers, list):
            return None
        pinned = [s for s in servers if isinstance(s, str)]
        path = "cluster.spec.api_server_url"
        if not pinned:
            return FieldViolation(
                path,
                f'credential "{ref}" names no API server, so it is sent to none '
                "(the operator pins it with `servers` in tke-controller's configuration)",
            )
        if server_key(url) not in {server_key(p) for p in pinned}:
            return FieldViolation(
                path,
                f'{url!r} is not a server of credential "{ref}" ({", ".join(pinned)}): '
                "a credential is sent only to the servers it is configured for",
            )
        return None

    return check


def cluster_credentials(cluster: cluster_pb2.Cluster) -> list[Reference]:
    tenant = cluster.metadata.tenant_id
    refs = credential(tenant, cluster.spec.credential_ref, "cluster.spec.credential_ref")
    url = cluster.spec.api_server_url
    if url and refs:  # an imported cluster: its credential goes to that URL
        refs = [dataclasses.replace(refs[0], check=pinned_server(url, cluster.spec.credential_ref), detail=url)]
    for i, m in enumerate(cluster.spec.machines):
        refs += credential(tenant, m.credential_ref, f"cluster.spec.machines[{i}].credential_ref")
    return refs


def machine_credentials(machine: machine_pb2.Machine) -> list[Reference]:
    return credential(machine.metadata.tenant_id, machine.spec.credential_ref, "machine.spec.credential_ref")


def cluster_machine_ips(cluster: cluster_pb2.Cluster) -> list[Unique]:
    """The addresses of spec.machines, and of status.control_plane members that name a
    credential: the installed masters a provider logs in to (baremetal's scaling in and
    teardown reset them, also once they left the spec). Status is written with UpdateStatus,
    by the platform only unless a role a platform administrator wrote or an external authorizer
    gives a tenant update-status, so such an address is held like one in the spec (until the
    controller has reset that master and drops it), and naming another object's machine there
    is refused the same way. Members without a credential are records only (a cloud's masters,
    whose private addresses repeat from one VPC to the next), never logged in to. Spec fields
    come last: theirs is the field an error names."""
    installed = [
        claim
        for i, member in enumerate(cluster.status.control_plane)
        if member.machine.credential_ref
        for claim in machine_ip(member.machine.ip, f"cluster.status.control_plane[{i}].machine.ip")
    ]
    # A managed VIP is an address the masters take on their network (keepalived announces it):
    # held like a machine's, so no cluster takes over another object's machine address.
    vip = cluster.spec.control_plane_vip.address if cluster.spec.HasField("control_plane_vip") else ""
    installed += machine_ip(vip, "cluster.spec.control_plane_vip.address") if vip else []
    return installed + [
        claim
        for i, m in enumerate(cluster.spec.machines)
        for claim in machine_ip(m.ip, f"cluster.spec.machines[{i}].ip")
    ]


CLUSTERS: Kind[cluster_pb2.Cluster] = Kind(
    name="cluster",
    plural="clusters",
    message=cluster_pb2.Cluster,
    validate=validation.validate_cluster,
    validate_status=validation.validate_cluster_status,
    immutable_spec_fields=("type",),
    uniques=cluster_machine_ips,
    references=cluster_credentials,
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
        uniques=lambda machine: machine_ip(machine.spec.ip, "machine.spec.ip"),
        references=machine_credentials,
    )


async def _about_its_own_tenant(before: event_pb2.Event | None, after: event_pb2.Event | None) -> None:
    """An event is about an object of its own tenant (event.proto says so): a tenant naming
    another tenant's object there would plant events about it, seen wherever events are
    listed by involved object across tenants."""
    if after is None:
        return
    tenant, claimed = after.metadata.tenant_id, after.spec.involved_object.tenant_id
    if claimed not in ("", tenant):
        raise errors.invalid(
            [
                errors.FieldViolation(
                    "event.spec.involved_object.tenant_id", f"must be the event's own tenant {tenant!r}, or empty"
                )
            ]
        )


# Events expire through their store (see app.py: an ExpiringStore under the event registry).
EVENTS: Kind[event_pb2.Event] = Kind(
    name="event",
    plural="events",
    message=event_pb2.Event,
    validate=validate_event,
    validate_status=validate_event_status,
    admit_write=_about_its_own_tenant,
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
