"""The imported cluster provider: adopts an existing Kubernetes cluster, anywhere, by its API
server URL and a credential (a kubeconfig with client certificates, bearer tokens or exec
plugins, or a bearer token and a CA). It installs nothing: it checks that the API server is
ready (/readyz) and which version it runs (/version), records its address, and reports the
cluster's nodes and their readiness in status.nodes, then keeps checking on every health check.
A cluster whose API server is not ready is unhealthy; nodes that are not Ready are reported,
not treated as the cluster's failure. Deleting an imported cluster only forgets it."""

from __future__ import annotations

import contextlib
import dataclasses
import urllib.parse
from collections.abc import AsyncIterator

from tke.internal.provider.addresses import url_host
from tke.internal.provider.contract import ClusterContext
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import node_status
from tke.internal.provider.kube.access import from_credential
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import cluster_pb2

MAX_NODES_LISTED = 100


class ImportedClusterProvider:
    name = "imported"

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.create_steps = [
            Step("VerifyAPIServer", self.verify, max_retries=10, description="the API server is ready; its version"),
            Step("RecordAddresses", self.record_addresses, description="status.addresses"),
            Step("RecordNodes", self.record_nodes, max_retries=10, description="status.nodes from the cluster's Nodes"),
        ]
        self.delete_steps: list[Step[ClusterContext]] = []
        self.scale_steps: list[Step[ClusterContext]] = []
        self.upgrade_steps: list[Step[ClusterContext]] = []

    def validate(self, cluster: cluster_pb2.Cluster) -> list[FieldViolation]:
        out = []
        if not cluster.spec.api_server_url:
            out.append(FieldViolation("cluster.spec.api_server_url", "is required for an imported cluster"))
        elif urllib.parse.urlsplit(cluster.spec.api_server_url).scheme != "https":
            out.append(FieldViolation("cluster.spec.api_server_url", "must be an https:// URL"))
        if not cluster.spec.credential_ref:
            out.append(FieldViolation("cluster.spec.credential_ref", "is required for an imported cluster"))
        return out

    @contextlib.asynccontextmanager
    async def _api(self, ctx: ClusterContext) -> AsyncIterator[ClusterAPI]:
        """The cluster's API, after the checks that keep a tenant's URL from taking the
        platform's credential or position elsewhere: the credential is pinned to its servers
        (from_credential), and the URL's host is an address the platform may go to
        (ctx.tools.addresses): as written here, and a name at each connection, which goes to an
        address of that very lookup (kube.transport). Each failure is permanent and sends
        nothing to the URL."""
        violations = self.validate(ctx.cluster)
        if violations:
            raise PermanentError("; ".join(f"{v.field}: {v.description}" for v in violations))
        url = ctx.cluster.spec.api_server_url
        credential = ctx.tools.credentials.get(ctx.cluster.spec.credential_ref)
        access = dataclasses.replace(from_credential(credential, url), addresses=ctx.tools.addresses)
        host, _ = url_host(url)
        if err := ctx.tools.addresses.host_refusal(host):
            raise PermanentError(f"cluster.spec.api_server_url: {err}")
        async with ClusterAPI(access, timeout=self.timeout) as api:
            yield api

    async def verify(self, ctx: ClusterContext) -> None:
        async with self._api(ctx) as api:
            version = await api.version()
            readiness = await api.readiness()
        if not readiness.ready:
            raise TemporaryError(f"the API server is {readiness.summary}")
        ctx.obj.status.version = version

    async def record_addresses(self, ctx: ClusterContext) -> None:
        url = urllib.parse.urlsplit(ctx.cluster.spec.api_server_url)
        status = ctx.obj.status
        del status.addresses[:]
        status.addresses.add(type="Advertise", host=url.hostname or "", port=url.port or 443, path=url.path)

    async def record_nodes(self, ctx: ClusterContext) -> None:
        async with self._api(ctx) as api:
            await self._record_nodes(api, ctx.obj.status)

    async def _record_nodes(self, api: ClusterAPI, status: cluster_pb2.ClusterStatus) -> cluster_pb2.ClusterNodes:
        reports = sorted((node_status.report(n) for n in await api.nodes()), key=lambda r: (r.ready, r.name))
        nodes = cluster_pb2.ClusterNodes(total=len(reports), ready=sum(r.ready for r in reports))
        for r in reports[:MAX_NODES_LISTED]:
            nodes.items.add(
                name=r.name,
                ready=r.ready,
                message="" if r.ready else r.ready_reason,
                kubelet_version=r.kubelet_version,
                address=r.internal_ip,
                roles=r.roles,
                unschedulable=r.unschedulable,
            )
        status.nodes.CopyFrom(nodes)
        return nodes

    async def check_health(self, ctx: ClusterContext) -> str:
        async with self._api(ctx) as api:
            readiness = await api.readiness()
            if not readiness.ready:
                raise TemporaryError(f"the API server is {readiness.summary}")
            version = await api.version()
            nodes = await self._record_nodes(api, ctx.obj.status)
        ctx.obj.status.version = version
        message = f"API server ready, Kubernetes {version}; {nodes.ready}/{nodes.total} nodes Ready"
        not_ready = [n.name for n in nodes.items if not n.ready]
        if not_ready:
            message += " (not Ready: " + ", ".join(not_ready[:5]) + (", ..." if len(not_ready) > 5 else "") + ")"
        return message
