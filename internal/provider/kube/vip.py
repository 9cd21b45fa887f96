"""A virtual IP in front of the API servers, run by the masters themselves, as kubeadm's
high-availability guide does it ("keepalived and haproxy" as static pods): keepalived moves
the VIP to a healthy master (VRRP), haproxy on every master spreads connections over every
API server. The files go where the guide puts them: /etc/keepalived/keepalived.conf and
check_apiserver.sh, /etc/haproxy/haproxy.cfg, and the two pod manifests in
/etc/kubernetes/manifests, written before kubeadm init or join so that the kubelet starts
them with the control plane.

The haproxy manifest carries a hash of its configuration as an annotation: when masters come
and go the configuration changes, the manifest with it, and the kubelet restarts the pod.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

KEEPALIVED_IMAGE = "osixia/keepalived:2.0.20"
HAPROXY_IMAGE = "haproxy:2.8"


@dataclass(frozen=True)
class VIPConfig:
    address: str
    port: int  # haproxy's
    interface: str
    router_id: int
    auth_pass: str  # VRRP PASS authentication: at most 8 characters
    backends: Sequence[tuple[str, str]]  # (node name, address) of every master
    api_port: int = 6443
    keepalived_image: str = KEEPALIVED_IMAGE
    haproxy_image: str = HAPROXY_IMAGE


def keepalived_conf(vip: VIPConfig, *, first: bool) -> str:
    # The first master starts as MASTER with a higher priority; the check script lowers a
    # master whose API server does not answer, so the VIP moves to one that does.
    return f"""! Managed by TKE: the control-plane VIP (kubeadm high-availability guide)
global_defs {{
    router_id LVS_DEVEL
}}
vrrp_script check_apiserver {{
  script "/etc/keepalived/check_apiserver.sh"
  interval 3
  weight -2
  fall 10
  rise 2
}}

vrrp_instance VI_1 {{
    state {"MASTER" if first else "BACKUP"}
    interface {vip.interface}
    virtual_router_id {vip.router_id}
    priority {101 if first else 100}
    authentication {{
        auth_type PASS
        auth_pass {vip.auth_pass}
    }}
    virtual_ipaddress {{
        {vip.address}
    }}
    track_script {{
        check_apiserver
    }}
}}
"""


def check_apiserver_sh(vip: VIPConfig) -> str:
    return f"""#!/bin/sh
# Managed by TKE: keepalived's health check of this master's path to the API servers.
errorExit() {{
    echo "*** $*" 1>&2
    exit 1
}}
curl -sfk --max-time 2 https://localhost:{vip.port}/healthz -o /dev/null || errorExit "Error GET https://localhost:{vip.port}/healthz"
"""


def haproxy_cfg(vip: VIPConfig) -> str:
    servers = "\n".join(
        f"        server {name} {_host(address)}:{vip.api_port} check verify none" for name, address in vip.backends
    )
    return f"""# Managed by TKE: the control-plane VIP's load balancer (kubeadm high-availability guide)
global
    log stdout format raw local0
    daemon

defaults
    mode                    http
    log                     global
    option                  httplog
    option                  dontlognull
    option http-server-close
    option forwardfor       except 127.0.0.0/8
    option                  redispatch
    retries                 1
    timeout http-request    10s
    timeout queue           20s
    timeout connect         5s
    timeout client          35s
    timeout server          35s
    timeout http-keep-alive 10s
    timeout check           10s

frontend apiserver
    bind *:{vip.port}
    mode tcp
    option tcplog
    default_backend apiserverbackend

backend apiserverbackend
    option httpchk
    http-check connect ssl
    http-check send meth GET uri /healthz
    http-check expect status 200
    mode tcp
    balance     roundrobin
{servers}
"""


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _pod(name: str, image: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "kube-system"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"hostNetwork": True, **spec}}


def keepalived_manifest(vip: VIPConfig) -> str:
    pod = _pod(
        "keepalived",
        vip.keepalived_image,
        {
            "containers": [
                {
                    "name": "keepalived",
                    "image": vip.keepalived_image,
                    "args": ["--copy-service"],
                    "resources": {},
                    "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_BROADCAST", "NET_RAW"]}},
                    "volumeMounts": [
                        {"mountPath": "/usr/local/etc/keepalived/keepalived.conf", "name": "config"},
                        {"mountPath": "/etc/keepalived/check_apiserver.sh", "name": "check"},
                    ],
                }
            ],
            "volumes": [
                {"name": "config", "hostPath": {"path": "/etc/keepalived/keepalived.conf"}},
                {"name": "check", "hostPath": {"path": "/etc/keepalived/check_apiserver.sh"}},
            ],
        },
    )
    return yaml.safe_dump(pod, sort_keys=False)


def haproxy_manifest(vip: VIPConfig) -> str:
    digest = hashlib.sha256(haproxy_cfg(vip).encode()).hexdigest()[:16]
    pod = _pod(
        "haproxy",
        vip.haproxy_image,
        {
            "containers": [
                {
                    "name": "haproxy",
                    "image": vip.haproxy_image,
                    "livenessProbe": {
                        "failureThreshold": 8,
                        "httpGet": {"host": "localhost", "path": "/healthz", "port": vip.port, "scheme": "HTTPS"},
                    },
                    "volumeMounts": [
                        {"mountPath": "/usr/local/etc/haproxy/haproxy.cfg", "name": "haproxyconf", "readOnly": True}
                    ],
                }
            ],
            "volumes": [
                {"name": "haproxyconf", "hostPath": {"path": "/etc/haproxy/haproxy.cfg", "type": "FileOrCreate"}}
            ],
        },
        annotations={"tke.cloud/config-hash": digest},
    )
    return yaml.safe_dump(pod, sort_keys=False)


def files(vip: VIPConfig, *, first: bool) -> dict[str, tuple[bytes, int]]:
    """Every file of the VIP on one master: path (from the machine's root) -> (content, mode)."""
    return {
        "/etc/keepalived/keepalived.conf": (keepalived_conf(vip, first=first).encode(), 0o644),
        "/etc/keepalived/check_apiserver.sh": (check_apiserver_sh(vip).encode(), 0o755),
        "/etc/haproxy/haproxy.cfg": (haproxy_cfg(vip).encode(), 0o644),
        "/etc/kubernetes/manifests/keepalived.yaml": (keepalived_manifest(vip).encode(), 0o644),
        "/etc/kubernetes/manifests/haproxy.yaml": (haproxy_manifest(vip).encode(), 0o644),
    }
