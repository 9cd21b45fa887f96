"""The provider contract: what a cluster or machine provider plugin is.

A provider is chosen by the resource's spec.type (entry point groups `tke.cluster_providers`
and `tke.machine_providers`, or "module:Class" in the controller's configuration) and
constructed with its options from that configuration. It provides:
- `create_steps`, `delete_steps` (run behind a finalizer), `scale_steps` and
  `upgrade_steps`: ordered lists of explicitly named, idempotent steps (steps.py). Each step
  gets a context with the object, the related objects and the tools (SSH dialer,
  credentials), may write fields of the object's status (addresses, version, node info), and
  fails with TemporaryError or PermanentError (errors.py).
- `validate(obj)`: the provider's own checks of the spec, as FieldViolations.
- `check_health(ctx)`: called now and then once the object is Running; returns a message, or
  raises TemporaryError when unhealthy.
- optionally `converge(ctx)`: called before each health check of a Running object; applies
  again what the provider made when what it would make now differs (its options or its
  rendering changed), and returns what it did (recorded as an event), or None when nothing
  changed. It must be cheap when nothing changed: it runs at every health check.
- optionally `waiting_for(obj)`: why the create steps cannot start yet (for example no
  control-plane machine in the spec), or None; the object waits in Initializing without
  spending retries, and goes on when the spec changes.
The framework does the rest: which step runs next, retries and backoff, conditions, phases,
events, finalizers and leader election.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tke.internal.provider.addresses import AddressPolicy, url_host
from tke.internal.provider.cluster_credentials import ClusterCredentialStore, NoCredentialStore
from tke.internal.provider.clusterapi import ClusterAPI, ClusterAPIs, KubeClusterAPIs
from tke.internal.provider.credentials import ConfiguredCredentials, Credentials
from tke.internal.provider.errors import PermanentError
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.ssh import CachingDialer, Dialer
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import cluster_pb2, machine_pb2


@dataclass
class Tools:
    """What the controller lends every step: SSH to machines, the login credentials of the
    object's tenant (only those: see credentials.py), the clusters' own credentials (kept by the
    platform), and the clusters' Kubernetes APIs."""

    dialer: Dialer
    credentials: Credentials
    cluster_credentials: ClusterCredentialStore = field(default_factory=NoCredentialStore)
    cluster_apis: ClusterAPIs = field(default_factory=KubeClusterAPIs)
    # Where the object's addresses may send the controller (tke.internal.provider.addresses):
    # providers check what they dial other than by SSH (the dialer checks its own targets).
    addresses: AddressPolicy = field(default_factory=AddressPolicy)


@dataclass
class Toolbox:
    """The controller's tools for every tenant, scoped per reconcile by `reconcile_tools`."""

    dialer: Dialer
    credentials: ConfiguredCredentials
    cluster_credentials: ClusterCredentialStore = field(default_factory=NoCredentialStore)
    cluster_apis: ClusterAPIs = field(default_factory=KubeClusterAPIs)
    addresses: AddressPolicy = field(default_factory=AddressPolicy)


class CheckedClusterAPIs:
    """The clusters' APIs of a reconcile, reached only at addresses the policy admits: a
    server whose host as written is refused (an address, or `localhost`) is a PermanentError
    when `connect` is called, before the cluster API layer is asked; a name goes to that layer
    with the policy in `access.addresses`, and the layer's connections (kube.api.ClusterAPI's,
    the default layer's) look it up once each, check every address and connect to one of them,
    so DNS that answers the check and the connection differently cannot send the controller
    elsewhere; a refused answer is a PermanentError of the call. A tenant's
    spec.control_plane_endpoint.host is a name tke-apiserver cannot judge: one resolving to
    loopback sent the controller's /readyz there. A layer that routes a name itself (to a
    stand-in, a tunnel) decides where it goes; a plugin layer connects through
    `access.addresses` (clusterapi.py)."""

    def __init__(self, inner: ClusterAPIs, addresses: AddressPolicy) -> None:
        self.inner = inner
        self.addresses = addresses

    def connect(self, access: ClusterAccess) -> contextlib.AbstractAsyncContextManager[ClusterAPI]:
        host, _ = url_host(access.server)
        if err := self.addresses.host_refusal(host):
            raise PermanentError(f"{access.server}: {err}")
        return self.inner.connect(dataclasses.replace(access, addresses=self.addresses))


@contextlib.asynccontextmanager
async def reconcile_tools(toolbox: Toolbox, tenant: str) -> AsyncIterator[Tools]:
    """The tools of one reconcile of an object of `tenant`: its credentials resolve in that
    tenant only, and SSH connections are reused within the reconcile and closed after it."""
    dialer = CachingDialer(toolbox.dialer, tenant)
    try:
        yield Tools(
            dialer=dialer,
            credentials=toolbox.credentials.for_tenant(tenant),
            cluster_credentials=toolbox.cluster_credentials,
            cluster_apis=CheckedClusterAPIs(toolbox.cluster_apis, toolbox.addresses),
            addresses=toolbox.addresses,
        )
    finally:
        await dialer.aclose()


@dataclass
class ClusterContext:
    obj: cluster_pb2.Cluster
    # The cluster's Machine resources (workers), from the controller's cache.
    machines: list[machine_pb2.Machine]
    tools: Tools
    # Scratch space for one reconcile: steps of one run may pass results along. Never rely on
    # it across steps that may run in different processes: write results where a later step
    # can read them again (the machines themselves, status).
    scratch: dict[str, Any] = field(default_factory=dict)

    @property
    def cluster(self) -> cluster_pb2.Cluster:
        return self.obj


@dataclass
class MachineContext:
    obj: machine_pb2.Machine
    cluster: cluster_pb2.Cluster
    tools: Tools
    scratch: dict[str, Any] = field(default_factory=dict)

    @property
    def machine(self) -> machine_pb2.Machine:
        return self.obj


class ClusterProvider(Protocol):
    name: str
    create_steps: Sequence[Any]  # Sequence[Step[ClusterContext]]
    delete_steps: Sequence[Any]
    scale_steps: Sequence[Any]
    upgrade_steps: Sequence[Any]

    def validate(self, cluster: cluster_pb2.Cluster) -> list[FieldViolation]: ...

    async def check_health(self, ctx: ClusterContext) -> str: ...


class MachineProvider(Protocol):
    name: str
    create_steps: Sequence[Any]  # Sequence[Step[MachineContext]]
    delete_steps: Sequence[Any]
    scale_steps: Sequence[Any]
    upgrade_steps: Sequence[Any]

    def validate(self, machine: machine_pb2.Machine) -> list[FieldViolation]: ...

    async def check_health(self, ctx: MachineContext) -> str: ...
