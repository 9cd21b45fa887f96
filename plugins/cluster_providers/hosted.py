"""The hosted cluster provider (TKE's managed mode): the cluster's control plane runs as
Kubernetes objects in a meta cluster the platform is configured with; only its workers are
machines (of any machine provider), which join the endpoint with a bootstrap token.

Create steps:
- EnsureClusterCredential: the cluster's CAs and service-account keys, kept by the platform.
- EnsureEndpoint: the cluster's namespace in the meta cluster and the endpoint Service (type
  LoadBalancer or NodePort); once the Service has an address, it is recorded in
  status.control_plane_endpoint and never changes (every certificate and node points at it).
- EnsureCertificates: the components' certificates and kubeconfigs as Secrets
  (plugins/hosted/certificates.py), kept while they are still what would be issued.
- EnsureIsolation: the namespace's Pod Security Admission labels (enforce restricted: the meta
  cluster admits no privileged or host pod there, control_plane.pod_security_labels), and the
  NetworkPolicies that isolate the namespace's pods from other tenants' control planes, the meta
  cluster's own services and link-local addresses (plugins/hosted/network_policy.py), before any
  pod of the control plane runs; with network_policy = false, the policies the platform made
  before are deleted. The step was EnsureNetworkPolicies: under its new name it runs once for
  every cluster made before, which labels their namespaces and brings their policies up to date.
- EnsureControlPlane: etcd (a StatefulSet), kube-apiserver, kube-controller-manager and
  kube-scheduler (Deployments) and their budgets (plugins/hosted/control_plane.py).
- WaitControlPlaneReady: the meta cluster's controllers report every replica ready.
- WaitAPIReady: the hosted API server answers /readyz through the endpoint.
- EnsureClusterObjects: what kubeadm init would have made in the cluster's own API, which
  `kubeadm join` reads, and kube-proxy (plugins/hosted/cluster_objects.py), applied as
  kubeadm's super-admin would (system:masters, a certificate valid for an hour).
- RecordAddresses.
Delete (after the cluster's Machines are gone): DeleteNamespace (everything of the control
plane goes with it; the step waits until the namespace is gone), DeleteClusterCredential.

Everything in the meta cluster is applied with server-side apply, so every step may run again
(a restarted controller) and changes nothing that is already as wanted. The namespace carries
the cluster's uid: a namespace left by an earlier cluster of the same name is deleted first.
One that carries another tenant's or cluster's labels (a name collision, naming.py) is neither
used nor deleted: the step fails for good, and DeleteNamespace leaves it alone.
Health (`converge`, then `check_health`): when what this platform would render in the namespace
(its digest) differs from what the namespace records as last applied, everything is applied again
(a changed option, a newer platform), so a control plane never stays as an older platform made it.
Upgrades are not supported yet: the spec refuses a version change once installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import Namespace, Secret, Service
from lightkube.resources.networking_v1 import NetworkPolicy

from tke.internal.config.loader import from_dict
from tke.internal.provider import cluster_credentials
from tke.internal.provider import endpoint as endpoints
from tke.internal.provider.clusterapi import ACCESS_LIFETIME, ClusterAPI, admin_access
from tke.internal.provider.contract import ClusterContext
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import api as kube_api
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import cluster_pb2
from tke.plugins.hosted import certificates, cluster_objects, control_plane, meta, naming, network_policy
from tke.plugins.hosted.options import HostedOptions
from tke.plugins.hosted.plan import Plan

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
SUPER_ADMIN = "tke:platform-super-admin"


def _check_ours(ctx: ClusterContext, namespace: str, labels: dict[str, str] | None) -> None:
    """PermanentError unless the namespace (its labels; None: it is not there) is this cluster's:
    EnsureEndpoint made it so, and no step writes (or creates) another's."""
    if (
        labels is None
        or not naming.owns(ctx.cluster, labels)
        or labels.get(naming.CLUSTER_UID) != ctx.cluster.metadata.uid
    ):
        raise PermanentError(f"namespace {namespace} of the meta cluster is not this cluster's")


def _namespace_ref(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


class HostedClusterProvider:
    name = "hosted"

    def __init__(self, **options: Any) -> None:
        self.options = from_dict(HostedOptions, dict(options), "options")
        self.create_steps = [
            Step("EnsureClusterCredential", self.ensure_credential, description="the cluster's CAs"),
            Step("EnsureEndpoint", self.ensure_endpoint, max_retries=300, description="namespace, endpoint Service"),
            Step("EnsureCertificates", self.ensure_certificates, description="the components' PKI, as Secrets"),
            Step("EnsureIsolation", self.ensure_isolation, description="Pod Security labels, NetworkPolicies"),
            Step("EnsureControlPlane", self.ensure_control_plane, description="etcd and the control plane's workloads"),
            Step("WaitControlPlaneReady", self.wait_control_plane, max_retries=300, description="every replica ready"),
            Step("WaitAPIReady", self.wait_api, max_retries=180, description="the API server is ready"),
            Step("EnsureClusterObjects", self.ensure_cluster_objects, description="what kubeadm join reads"),
            Step("RecordAddresses", self.record_addresses, description="status.addresses"),
        ]
        self.delete_steps = [
            Step("DeleteNamespace", self.delete_namespace, max_retries=300, description="the control plane"),
            Step("DeleteClusterCredential", self.delete_credential),
        ]
        self.scale_steps: list[Step[ClusterContext]] = []
        self.upgrade_steps: list[Step[ClusterContext]] = []

    # -- validation ---------------------------------------------------------------------------

    def validate(self, cluster: cluster_pb2.Cluster) -> list[FieldViolation]:
        spec = cluster.spec
        out: list[FieldViolation] = []
        if "+" in spec.version:
            # The control plane's images are tagged v<version>, and "+" cannot be in an image tag:
            # every pod of the control plane failed to pull.
            out.append(FieldViolation("cluster.spec.version", "build metadata (+...) cannot be part of an image tag"))
        try:
            if kubecfg.minor(spec.version) < (1, 29):
                out.append(FieldViolation("cluster.spec.version", "must be 1.29 or later"))
        except (ValueError, IndexError):
            out.append(FieldViolation("cluster.spec.version", "is required: a Kubernetes version such as 1.31.2"))
        if not spec.network.pod_cidr or not spec.network.service_cidr:
            out.append(FieldViolation("cluster.spec.network", "pod_cidr and service_cidr are required"))
        if spec.machines:
            out.append(
                FieldViolation("cluster.spec.machines", "must be empty: the control plane runs in the meta cluster")
            )
        for field in ("control_plane_endpoint", "control_plane_vip"):
            if spec.HasField(field):
                out.append(FieldViolation(f"cluster.spec.{field}", "must be empty: the endpoint is the platform's"))
        if spec.WhichOneof("provider_config"):
            out.append(FieldViolation(f"cluster.spec.{spec.WhichOneof('provider_config')}", "not for a hosted cluster"))
        for component, args in spec.extra_args.items():
            path = f"cluster.spec.extra_args[{component}]"
            if component not in COMPONENTS:
                out.append(FieldViolation(path, f"unknown component; one of {', '.join(COMPONENTS)}"))
                continue
            fixed = control_plane.fixed_flags(component, args.args)
            if fixed:
                out.append(FieldViolation(path, f"{', '.join(fixed)}: set by the platform (they wire the control "
                                                "plane together)"))  # fmt: skip
        size = control_plane.args_bytes({c: a.args for c, a in spec.extra_args.items()})
        if size > control_plane.MAX_ARGS_BYTES:
            out.append(
                FieldViolation(
                    "cluster.spec.extra_args",
                    f"the control plane's extra args take {size} bytes; at most {control_plane.MAX_ARGS_BYTES} "
                    "(etcd, kube-apiserver, kube-controller-manager and kube-scheduler together: they are stored "
                    "in the meta cluster every tenant shares)",
                )
            )
        status = cluster.status
        if status.control_plane_endpoint and status.version and spec.version.lstrip("v") != status.version:
            out.append(FieldViolation("cluster.spec.version", "hosted clusters are not upgraded in place yet"))
        return out

    # -- helpers ------------------------------------------------------------------------------

    def _check(self, ctx: ClusterContext) -> None:
        violations = self.validate(ctx.cluster)
        if violations:
            raise PermanentError("; ".join(f"{v.field}: {v.description}" for v in violations))

    @contextlib.asynccontextmanager
    async def _meta(self) -> AsyncIterator[kube_api.ClusterAPI]:
        async with meta.connect(self.options) as client:
            yield client

    def _namespace(self, ctx: ClusterContext) -> str:
        return naming.namespace(ctx.cluster, self.options.namespace_prefix)

    async def _plan(self, client: kube_api.ClusterAPI, ctx: ClusterContext) -> Plan:
        """The plan of an installed endpoint (TemporaryError before EnsureEndpoint recorded it).
        etcd keeps the member count it was created with."""
        if not ctx.cluster.status.control_plane_endpoint:
            raise TemporaryError(f"cluster {ctx.cluster.metadata.name} has no endpoint yet")
        endpoint = endpoints.parse(ctx.cluster.status.control_plane_endpoint)
        namespace = self._namespace(ctx)
        existing = await client.get(StatefulSet, naming.ETCD, namespace)
        members = existing.spec.replicas if existing is not None and existing.spec else None
        options = self.options
        claims = (existing.spec.volumeClaimTemplates if existing is not None and existing.spec else None) or []
        if claims and claims[0].spec is not None:
            # A StatefulSet's volume claim templates are immutable: an etcd keeps the volumes it
            # was created with (a changed etcd_storage_size or class applies to new clusters).
            spec = claims[0].spec
            requests = (spec.resources.requests if spec.resources else None) or {}
            options = dataclasses.replace(
                options,
                etcd_storage_size=str(requests.get("storage") or options.etcd_storage_size),
                etcd_storage_class=spec.storageClassName or "",
            )
        return Plan(ctx.cluster, options, namespace, endpoint, endpoint.port, members or options.etcd_replicas)

    @contextlib.asynccontextmanager
    async def _hosted(self, ctx: ClusterContext, *, super_admin: bool = False) -> AsyncIterator[ClusterAPI]:
        """The hosted cluster's API through its endpoint: as the platform, or (before its RBAC
        exists) as kubeadm's super-admin, in system:masters."""
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        server = endpoints.of(ctx.cluster).url
        if super_admin:
            pair = cas.ca.issue(SUPER_ADMIN, orgs=("system:masters",), client=True, lifetime=ACCESS_LIFETIME)
            access = ClusterAccess(server, cas.ca.pair.cert_pem, pair.cert_pem, pair.key_pem)
        else:
            access = admin_access(server, cas.ca, ctx.cluster.spec.version)
        async with ctx.tools.cluster_apis.connect(access) as api:
            yield api

    async def _secret_files(self, client: kube_api.ClusterAPI, namespace: str) -> dict[str, dict[str, bytes]]:
        out = {}
        for name in certificates.SECRETS:
            found = await client.get(Secret, name, namespace)
            out[name] = certificates.decoded(found) if found is not None else {}
        return out

    async def _workloads(self, client: kube_api.ClusterAPI, namespace: str) -> list[Any]:
        found: list[Any] = [await client.get(StatefulSet, naming.ETCD, namespace)]
        found += [await client.get(Deployment, name, namespace) for name in control_plane.WORKLOADS]
        missing = [name for name, w in zip((naming.ETCD, *control_plane.WORKLOADS), found, strict=True) if w is None]
        if missing:
            raise TemporaryError(f"{', '.join(missing)} missing from namespace {namespace} of the meta cluster")
        return found

    # -- create -------------------------------------------------------------------------------

    async def ensure_credential(self, ctx: ClusterContext) -> None:
        self._check(ctx)
        await cluster_credentials.ensure_cas(ctx.tools.cluster_credentials, ctx.cluster)

    async def ensure_endpoint(self, ctx: ClusterContext) -> None:
        self._check(ctx)
        name = self._namespace(ctx)
        # The endpoint is what this step finds out: the Service's manifests do not depend on it.
        plan = Plan(ctx.cluster, self.options, name, endpoints.Endpoint("", self.options.port), 0, 0)
        async with self._meta() as client:
            found = await client.get(Namespace, name)
            if found is not None:
                labels = (found.metadata.labels if found.metadata else None) or {}
                if labels.get(naming.MANAGED_BY) != naming.PLATFORM:
                    raise PermanentError(f"namespace {name} of the meta cluster exists and is not the platform's")
                if not naming.owns(ctx.cluster, labels):
                    # Same name, another tenant's cluster (naming.py): never take it over or delete it.
                    raise PermanentError(
                        f"namespace {name} of the meta cluster belongs to another cluster; rename this cluster"
                    )
                if labels.get(naming.CLUSTER_UID) != ctx.cluster.metadata.uid:
                    await client.delete([_namespace_ref(name)])
                    raise TemporaryError(f"namespace {name} of an earlier cluster of this name is being deleted")
            await client.apply([control_plane.namespace(plan), control_plane.endpoint_service(plan)])
            service = await client.get(Service, naming.ENDPOINT_SERVICE, name)
            if service is None:
                raise TemporaryError(f"the endpoint Service of namespace {name} is gone")
            nodes: list[str] = []
            if self.options.service_type == "NodePort" and not self.options.node_port_host:
                nodes = meta.node_addresses(await client.nodes())
            found_endpoint = meta.service_endpoint(service, self.options, nodes)
        if found_endpoint is None:
            raise TemporaryError(f"the endpoint Service ({self.options.service_type}) has no address yet", delay=2.0)
        recorded = ctx.obj.status.control_plane_endpoint
        if recorded and recorded != found_endpoint.address:
            raise PermanentError(
                f"the endpoint Service moved from {recorded} to {found_endpoint.address}; the cluster's certificates "
                "and nodes point at the old address"
            )
        ctx.obj.status.control_plane_endpoint = found_endpoint.address

    async def ensure_certificates(self, ctx: ClusterContext) -> None:
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        async with self._meta() as client:
            plan = await self._plan(client, ctx)
            files = certificates.secret_files(plan, cas, await self._secret_files(client, plan.namespace))
            await client.apply([certificates.secret(plan, name, data) for name, data in files.items()])

    async def ensure_isolation(self, ctx: ClusterContext) -> None:
        """The namespace's Pod Security labels (applied again: a namespace made before them gets
        them), then its NetworkPolicies."""
        async with self._meta() as client:
            plan = await self._plan(client, ctx)
            found = await client.get(Namespace, plan.namespace)
            _check_ours(ctx, plan.namespace, (found.metadata.labels if found is not None and found.metadata else None))
            await client.apply([control_plane.namespace(plan)])
        await self.ensure_network_policies(ctx)

    async def ensure_network_policies(self, ctx: ClusterContext) -> None:
        async with self._meta() as client:
            plan = await self._plan(client, ctx)
            await client.apply(network_policy.policies(plan))
            await self._delete_stale_policies(client, plan)

    async def _delete_stale_policies(self, client: kube_api.ClusterAPI, plan: Plan) -> None:
        stale = []
        for ref in network_policy.stale(plan):
            found = await client.get(NetworkPolicy, ref["metadata"]["name"], plan.namespace)
            labels = (found.metadata.labels if found is not None and found.metadata else None) or {}
            if labels.get(naming.MANAGED_BY) == naming.PLATFORM:
                stale.append(ref)  # the platform's; an operator's own policy of that name stays
        await client.delete(stale)

    async def ensure_control_plane(self, ctx: ClusterContext) -> None:
        """The workloads; with them, every object of the namespace is applied again as this
        platform renders it and the digest of that rendering recorded (`converge`)."""
        await self.converge(ctx, force=True)

    async def _render(self, client: kube_api.ClusterAPI, ctx: ClusterContext) -> tuple[Plan, list[dict[str, Any]]]:
        """Every object of the control plane's namespace as this platform renders it now: the
        namespace, the endpoint Service, the NetworkPolicies, etcd and the control plane's
        workloads (whose templates carry their Secrets' checksums)."""
        self._check(ctx)  # an object stored before a rule (MAX_ARGS_BYTES) renders nothing
        plan = await self._plan(client, ctx)
        files = await self._secret_files(client, plan.namespace)
        if not all(files.values()):
            raise TemporaryError("the control plane's Secrets are not all there yet")
        sums = {name: certificates.checksum(data) for name, data in files.items()}
        return plan, [
            control_plane.namespace(plan),
            control_plane.endpoint_service(plan),
            *network_policy.policies(plan),
            *control_plane.etcd(plan, sums[certificates.ETCD_SECRET]),
            *control_plane.apiserver(plan, sums[certificates.APISERVER_SECRET]),
            *control_plane.controller_manager(plan, sums[certificates.CONTROLLER_MANAGER_SECRET]),
            *control_plane.scheduler(plan, sums[certificates.SCHEDULER_SECRET]),
        ]

    async def converge(self, ctx: ClusterContext, *, force: bool = False) -> str | None:
        """Keep the namespace's objects as this platform renders them. The namespace records the
        digest of what was last applied (annotation `tke.cloud/rendered`); when what would be
        rendered now differs (a changed option such as `resources`, a platform that renders
        differently, new certificates), everything is applied again with server-side apply
        (each Deployment and the StatefulSet roll their pods as their strategy says), the
        platform's stale NetworkPolicies are deleted, and the new digest recorded: returns what
        was done. Otherwise nothing is written and None returned. Never touches a namespace
        that is not this cluster's (its tenant, cluster and uid labels)."""
        async with self._meta() as client:
            plan, objects = await self._render(client, ctx)
            found = await client.get(Namespace, plan.namespace)
            meta_ = found.metadata if found is not None else None
            _check_ours(ctx, plan.namespace, None if found is None else (meta_.labels if meta_ else None) or {})
            stale = network_policy.stale(plan)
            digest = rendered_digest(objects, stale)
            recorded = ((meta_.annotations if meta_ else None) or {}).get(naming.RENDERED, "")
            if recorded == digest and not force:
                return None
            await client.apply(objects)
            await self._delete_stale_policies(client, plan)
            await client.annotate(Namespace, plan.namespace, {naming.RENDERED: digest})
        if not recorded:
            return None if force else f"recorded the digest of the objects of namespace {plan.namespace}"
        if recorded == digest:
            return None
        return (
            f"the control plane's objects in namespace {plan.namespace} applied again as this platform renders them "
            f"(digest {recorded[:12]} -> {digest[:12]})"
        )

    async def wait_control_plane(self, ctx: ClusterContext) -> None:
        async with self._meta() as client:
            meta.raise_unless_ready(await self._workloads(client, self._namespace(ctx)))

    async def wait_api(self, ctx: ClusterContext) -> None:
        async with self._hosted(ctx, super_admin=True) as api:
            ctx.obj.status.version = (await api.ready()).lstrip("v")

    async def ensure_cluster_objects(self, ctx: ClusterContext) -> None:
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        endpoint = endpoints.of(ctx.cluster)
        objects = [
            *cluster_objects.bootstrap(ctx.cluster, endpoint, cas.ca.pair.cert_pem),
            *cluster_objects.kube_proxy(
                ctx.cluster, endpoint, self.options.image("kube-proxy", ctx.cluster.spec.version)
            ),
        ]
        async with self._hosted(ctx, super_admin=True) as api:
            await api.apply(objects)

    async def record_addresses(self, ctx: ClusterContext) -> None:
        status = ctx.obj.status
        ep = endpoints.of(ctx.cluster)
        del status.addresses[:]
        status.addresses.add(type="Advertise", host=ep.host, port=ep.port)

    # -- delete -------------------------------------------------------------------------------

    async def delete_namespace(self, ctx: ClusterContext) -> None:
        name = self._namespace(ctx)
        async with self._meta() as client:
            found = await client.get(Namespace, name)
            if found is None:
                return
            labels = (found.metadata.labels if found.metadata else None) or {}
            if not naming.owns(ctx.cluster, labels):
                return  # not this cluster's (never the platform's, or another tenant's): nothing of it is in it
            left = await client.delete([_namespace_ref(name)])
        if left:
            raise TemporaryError(f"namespace {name} of the meta cluster is still being deleted", delay=2.0)

    async def delete_credential(self, ctx: ClusterContext) -> None:
        await ctx.tools.cluster_credentials.delete(ctx.cluster.metadata.tenant_id, ctx.cluster.metadata.name)

    # -- health -------------------------------------------------------------------------------

    async def check_health(self, ctx: ClusterContext) -> str:
        """The workloads' status and the hosted API's /readyz (`converge` runs before it, from
        the controller's health check)."""
        async with self._meta() as client:
            meta.raise_unless_ready(await self._workloads(client, self._namespace(ctx)))
        async with self._hosted(ctx) as api:
            version = await api.ready()
        return f"{endpoints.of(ctx.cluster).address}: ready ({version}), control plane in {self._namespace(ctx)}"


def rendered_digest(objects: list[dict[str, Any]], stale: list[dict[str, Any]]) -> str:
    """The sha256 of what a control plane's namespace should hold (and what it should not)."""
    text = json.dumps({"apply": objects, "delete": stale}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
