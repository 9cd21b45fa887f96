"""The meta cluster, as the hosted provider sees it: how to reach its API (the operator's
kubeconfig, read at each use so that a rotated credential is picked up), where a control
plane's endpoint Service can be reached from outside, and whether its workloads are ready.

Readiness is what the meta cluster's controllers report in each object's status: a workload is
ready once its controller has seen the current spec (observedGeneration) and every replica of it
is ready (and, for a Deployment, updated). Nothing here looks at pods: the controllers' status
already sums them up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tke.internal.provider.endpoint import Endpoint
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import api as kube_api
from tke.internal.provider.kube.access import from_kubeconfig
from tke.plugins.hosted.options import HostedOptions


def connect(options: HostedOptions) -> kube_api.ClusterAPI:
    """A client of the meta cluster (close it after use)."""
    if not options.kubeconfig_file:
        raise PermanentError(
            "the hosted provider has no meta cluster: set kubeconfig_file in [cluster_providers.hosted.options]"
        )
    path = Path(options.kubeconfig_file)
    try:
        text = path.read_text()
    except OSError as err:
        raise PermanentError(f"the meta cluster's kubeconfig {path}: {err.strerror}") from None
    try:
        access = from_kubeconfig(
            text, context=options.kubeconfig_context, base_dir=path.parent.resolve(), allow_exec=True
        )
    except PermanentError as err:
        raise PermanentError(f"the meta cluster's kubeconfig {path}: {err}") from None
    return kube_api.ClusterAPI(access, timeout=options.timeout)


def service_endpoint(service: Any, options: HostedOptions, node_addresses: list[str]) -> Endpoint | None:
    """Where the endpoint Service is reached from outside the meta cluster, or None while it
    has no address yet: a LoadBalancer's first ingress (IP, else host name) and the Service's
    port; a NodePort's `node_port_host` (else the first of `node_addresses`) and its node port."""
    spec, status = service.spec, service.status
    port = next(iter(spec.ports or []), None)
    if port is None:
        return None
    if spec.type == "LoadBalancer":
        ingress = next(iter((status.loadBalancer.ingress if status and status.loadBalancer else None) or []), None)
        host = (ingress.ip or ingress.hostname) if ingress is not None else None
        return Endpoint(host, port.port) if host else None
    if spec.type == "NodePort" and port.nodePort:
        host = options.node_port_host or next(iter(node_addresses), "")
        return Endpoint(host, port.nodePort) if host else None
    raise PermanentError(f"the endpoint Service is of type {spec.type}, not {options.service_type}")


def node_addresses(nodes: list[Any]) -> list[str]:
    """The InternalIP of every Ready node of the meta cluster, in name order."""
    out = []
    for node in sorted(nodes, key=lambda n: n.metadata.name or ""):
        conditions = (node.status.conditions if node.status else None) or []
        if not any(c.type == "Ready" and c.status == "True" for c in conditions):
            continue
        addresses = (node.status.addresses if node.status else None) or []
        out += [a.address for a in addresses if a.type == "InternalIP"][:1]
    return out


def not_ready(workload: Any) -> str | None:
    """Why a StatefulSet or Deployment is not ready yet, or None when it is."""
    name = f"{workload.kind} {workload.metadata.name}"
    wanted = workload.spec.replicas if workload.spec.replicas is not None else 1
    status = workload.status
    if status is None or (status.observedGeneration or 0) < (workload.metadata.generation or 0):
        return f"{name}: its controller has not seen the current spec yet"
    ready = status.readyReplicas or 0
    updated = status.updatedReplicas or 0
    if ready < wanted or updated < wanted:
        return f"{name}: {ready} of {wanted} replicas ready, {updated} updated"
    return None


def raise_unless_ready(workloads: list[Any]) -> None:
    reasons = [r for w in workloads if (r := not_ready(w))]
    if reasons:
        raise TemporaryError("; ".join(reasons), delay=2.0)
