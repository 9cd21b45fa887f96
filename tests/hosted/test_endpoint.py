"""Where the hosted provider finds the cluster's endpoint in the meta cluster: a LoadBalancer's
ingress (an address, else a host name) and port, or for NodePort the configured host (else the
first Ready node's InternalIP) and the node port; nothing while the Service has no address."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube import codecs

from tke.internal.provider.endpoint import Endpoint
from tke.internal.provider.errors import PermanentError
from tke.plugins.hosted import meta
from tke.plugins.hosted.options import HostedOptions


def service(kind: str, ingress: list[dict[str, str]] | None = None, node_port: int = 0) -> Any:
    port: dict[str, Any] = {"name": "https", "port": 6443, "targetPort": "https"}
    if node_port:
        port["nodePort"] = node_port
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-apiserver"},
        "spec": {"type": kind, "ports": [port]},
    }
    if ingress is not None:
        obj["status"] = {"loadBalancer": {"ingress": ingress}}
    return codecs.from_dict(obj)


def node(name: str, ip: str, ready: bool) -> Any:
    return codecs.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
            },
        }
    )


def test_a_load_balancers_first_ingress_and_the_services_port() -> None:
    lb = HostedOptions()
    assert meta.service_endpoint(service("LoadBalancer"), lb, []) is None
    assert meta.service_endpoint(service("LoadBalancer", []), lb, []) is None
    got = meta.service_endpoint(service("LoadBalancer", [{"ip": "203.0.113.7"}, {"ip": "203.0.113.8"}]), lb, [])
    assert got == Endpoint("203.0.113.7", 6443)
    named = meta.service_endpoint(service("LoadBalancer", [{"hostname": "lb.example.com"}]), lb, [])
    assert named == Endpoint("lb.example.com", 6443)


def test_a_node_port_on_the_configured_host_or_the_first_ready_node() -> None:
    svc = service("NodePort", node_port=31443)
    assert meta.service_endpoint(svc, HostedOptions(service_type="NodePort", node_port_host="vip.example.com"), []) == (
        Endpoint("vip.example.com", 31443)
    )
    nodes = [node("b", "10.0.0.2", True), node("a", "10.0.0.1", False), node("c", "10.0.0.3", True)]
    addresses = meta.node_addresses(nodes)
    assert addresses == ["10.0.0.2", "10.0.0.3"]
    assert meta.service_endpoint(svc, HostedOptions(service_type="NodePort"), addresses) == Endpoint("10.0.0.2", 31443)
    assert meta.service_endpoint(svc, HostedOptions(service_type="NodePort"), []) is None


def test_a_service_changed_to_another_type_is_an_error() -> None:
    with pytest.raises(PermanentError, match="ClusterIP"):
        meta.service_endpoint(service("ClusterIP"), HostedOptions(), [])
