"""The meta cluster's objects of one hosted control plane, as manifests (dicts):

- the namespace (with Pod Security Admission's labels: every pod there must be "restricted"),
  and the endpoint: a Service of the configured type (LoadBalancer, NodePort)
  in front of the API servers;
- etcd: a StatefulSet of 1, 3 or 5 members (pods etcd-0.. behind the headless Service `etcd`,
  started together: a member alone is never ready without its quorum), peer and client TLS
  with client certificates required, a volume per member, a PodDisruptionBudget that keeps
  the quorum;
- kube-apiserver, kube-controller-manager and kube-scheduler: Deployments, with kubeadm's
  flags (bootstrap tokens accepted, the front proxy, the service-account keys, the controllers
  kubeadm enables: bootstrapsigner and tokencleaner sign cluster-info and remove expired join
  tokens), leader election on, a PodDisruptionBudget each.

Every container has requests and a memory limit (options.DEFAULT_RESOURCES, the option
`resources`): the meta cluster is shared by every tenant's control plane, and one tenant's
etcd or API server must not take a node's memory from the others'.

kube-apiserver listens on the endpoint's port and advertises the endpoint's address, so that
the cluster's own `kubernetes` Service points where its nodes reach it. Pods run without root,
privileges or the meta cluster's service-account token (the meta cluster's API is not theirs to
reach), and carry the checksum of their Secret, so that new certificates roll them. A
component's flags are kubeadm's, then the cluster's spec.extra_args; flags that wire the
control plane together (certificates, etcd, ports) are not the spec's to change (validation
refuses them: FIXED_FLAGS), and all of them together are at most MAX_ARGS_BYTES.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from tke.internal.provider.kube.config import extra_args
from tke.plugins.hosted import certificates, naming
from tke.plugins.hosted.plan import (
    CONTROLLER_MANAGER_PORT,
    ETCD_CLIENT_PORT,
    ETCD_METRICS_PORT,
    ETCD_PEER_PORT,
    SCHEDULER_PORT,
    Plan,
)

PKI_DIR = "/etc/kubernetes/pki"
ETCD_PKI_DIR = "/etc/etcd/pki"
ETCD_DATA_DIR = "/var/lib/etcd"
CHECKSUM = "tke.cloud/pki-checksum"
NON_ROOT = 65532
# Flags that wire the hosted control plane together: a spec's extra args may not set them.
FIXED_FLAGS: dict[str, frozenset[str]] = {
    "etcd": frozenset(
        {
            "name", "data-dir", "listen-client-urls", "advertise-client-urls", "listen-peer-urls",
            "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "initial-cluster-token",
            "client-cert-auth", "trusted-ca-file", "cert-file", "key-file", "peer-client-cert-auth",
            "peer-trusted-ca-file", "peer-cert-file", "peer-key-file", "listen-metrics-urls",
            # A second, plain-HTTP client listener; membership found elsewhere; self-signed TLS.
            "listen-client-http-urls", "discovery", "discovery-srv", "discovery-srv-name", "discovery-proxy",
            "auto-tls", "peer-auto-tls",
        }
    ),
    "kube-apiserver": frozenset(
        {
            "advertise-address", "bind-address", "secure-port", "client-ca-file", "tls-cert-file",
            "tls-private-key-file", "etcd-servers", "etcd-cafile", "etcd-certfile", "etcd-keyfile",
            "kubelet-client-certificate", "kubelet-client-key", "proxy-client-cert-file", "proxy-client-key-file",
            "requestheader-client-ca-file", "service-account-key-file", "service-account-signing-key-file",
            "service-cluster-ip-range", "enable-bootstrap-token-auth", "endpoint-reconciler-type",
            "etcd-servers-overrides",  # other etcd servers for some resources
        }
    ),
    "kube-controller-manager": frozenset(
        {
            "kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig", "bind-address", "secure-port",
            "client-ca-file", "cluster-signing-cert-file", "cluster-signing-key-file", "root-ca-file",
            "requestheader-client-ca-file", "service-account-private-key-file", "leader-elect",
            "master",  # overrides the kubeconfig's server
        }
    ),
    "kube-scheduler": frozenset(
        {"kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig", "bind-address", "secure-port",
         "leader-elect", "master"}
    ),
}  # fmt: skip


def fixed_flags(component: str, names: Iterable[str]) -> list[str]:
    """Those of `names` that set one of the component's FIXED_FLAGS. Kubernetes' components
    read "_" in a flag's name as "-" (component-base's WordSepNormalizeFunc, which cli.Run sets
    for kube-apiserver, kube-controller-manager and kube-scheduler): `etcd_servers` is
    `--etcd-servers` to them, and `etcd_servers_overrides` passed the check of the name as
    written. etcd (Go's flag package) has no such reading; "_" is read as "-" for it too, which
    refuses only flags it does not know."""
    fixed = FIXED_FLAGS.get(component, frozenset())
    return sorted(name for name in names if name.replace("_", "-") in fixed)


# What one cluster's extra args may add to its workloads in the meta cluster, flag names and
# values of etcd, kube-apiserver, kube-controller-manager and kube-scheduler together. The meta
# cluster is shared by every tenant's control plane, and each byte of a command is stored there
# many times: in the Deployment, in a ReplicaSet per rollout (ten kept by default) and in every
# pod. Without a bound, a tenant's 1 MiB cluster object made a 1 MiB Deployment, and its quota
# of clusters some GiB of the meta cluster's etcd (2 GiB by default): full, every tenant's
# control plane could no longer be changed. Real extra args (OIDC, feature gates, cipher suites,
# audit settings) take a few KiB.
MAX_ARGS_BYTES = 16 * 1024


def args_bytes(extra: Mapping[str, Mapping[str, str]]) -> int:
    """What `extra` (component -> flag -> value) adds to the meta cluster's commands."""
    return sum(len(f"--{k}={v}".encode()) for c, args in extra.items() if c in FIXED_FLAGS for k, v in args.items())


def _meta(plan: Plan, name: str, component: str = "", **more: Any) -> dict[str, Any]:
    labels = naming.component_labels(plan.cluster, component) if component else naming.labels(plan.cluster)
    return {"name": name, "namespace": plan.namespace, "labels": labels, **more}


# Pod Security Admission (the meta cluster's kube-apiserver, GA since 1.25) on every control
# plane's namespace: the meta cluster refuses any pod there that is not "restricted" (a privileged
# or hostPath pod made by a bug, a component with the namespace's rights or an operator's mistake),
# whatever made it. `enforce` is pinned to a version, so that an upgrade of the meta cluster that
# tightens the profile never starts refusing a control plane's pods in the middle of a rollout;
# `warn` and `audit` follow the meta cluster's latest rules, so that what a newer profile would
# refuse shows (warnings on the platform's applies, annotations in the audit log) before the pin
# moves. The pin is the oldest meta cluster the renderer is checked against (tests/hosted,
# META_VERSIONS); a meta cluster older than the pin evaluates its own latest rules.
POD_SECURITY_LEVEL = "restricted"
POD_SECURITY_VERSION = "v1.30"
POD_SECURITY = "pod-security.kubernetes.io"


def pod_security_labels() -> dict[str, str]:
    return {
        f"{POD_SECURITY}/enforce": POD_SECURITY_LEVEL,
        f"{POD_SECURITY}/enforce-version": POD_SECURITY_VERSION,
        f"{POD_SECURITY}/warn": POD_SECURITY_LEVEL,
        f"{POD_SECURITY}/warn-version": "latest",
        f"{POD_SECURITY}/audit": POD_SECURITY_LEVEL,
        f"{POD_SECURITY}/audit-version": "latest",
    }


def namespace(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": plan.namespace, "labels": {**naming.labels(plan.cluster), **pod_security_labels()}},
    }


def endpoint_service(plan: Plan) -> dict[str, Any]:
    """The cluster's endpoint. The Service's own port is `port` (a LoadBalancer's); its target
    is the API servers' named port, which is the node port with NodePort."""
    meta = _meta(plan, naming.ENDPOINT_SERVICE, naming.APISERVER)
    if plan.options.service_annotations:
        meta["annotations"] = dict(plan.options.service_annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": plan.options.service_type,
            "selector": naming.selector(plan.cluster, naming.APISERVER),
            "ports": [{"name": "https", "port": plan.options.port, "targetPort": "https", "protocol": "TCP"}],
        },
    }


def _flags(defaults: Mapping[str, str], plan: Plan, component: str) -> list[str]:
    """kubeadm's flags, then the spec's extra args (never over FIXED_FLAGS: validation refuses
    them, and they are left out here too)."""
    spec = extra_args(plan.cluster, component)
    refused = set(fixed_flags(component, spec))
    given = {k: v for k, v in spec.items() if k not in refused}
    return [f"--{k}={v}" for k, v in sorted({**defaults, **given}.items())]


def _mounts(pki_dir: str) -> list[dict[str, Any]]:
    """The component's Secret, and the only writable places of a read-only root: /tmp and
    /var/run/kubernetes (where a component writes what it generates for itself)."""
    return [
        {"name": "pki", "mountPath": pki_dir, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp", "subPath": "tmp"},
        {"name": "tmp", "mountPath": "/var/run/kubernetes", "subPath": "run"},
    ]


def _hardened() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_spec(plan: Plan, component: str, containers: list[dict[str, Any]], secret: str) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT,
            "runAsGroup": NON_ROOT,
            "fsGroup": NON_ROOT,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": naming.selector(plan.cluster, component)},
                        },
                    }
                ]
            }
        },
        "containers": containers,
        "volumes": [
            {"name": "pki", "secret": {"secretName": secret, "defaultMode": 0o440}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        ],
    }


def _template(plan: Plan, component: str, spec: dict[str, Any], checksum: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": naming.component_labels(plan.cluster, component), "annotations": {CHECKSUM: checksum}},
        "spec": spec,
    }


def _probe(path: str, port: str | int, scheme: str = "HTTPS", **timing: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port, "scheme": scheme},
        "periodSeconds": 10,
        "timeoutSeconds": 15,
        "failureThreshold": 8,
        **timing,
    }


def _budget(plan: Plan, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(plan, component, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": naming.selector(plan.cluster, component)}},
    }


# -- etcd ------------------------------------------------------------------------------------


def etcd(plan: Plan, checksum: str) -> list[dict[str, Any]]:
    """The headless Service, the StatefulSet and its PodDisruptionBudget."""
    members = plan.etcd_members
    peers = ",".join(
        f"{plan.etcd_member(i)}=https://{plan.etcd_member_host(i)}:{ETCD_PEER_PORT}" for i in range(members)
    )
    me = f"$(POD_NAME).{plan.service_host(naming.ETCD_SERVICE)}"
    defaults = {
        "name": "$(POD_NAME)",
        "data-dir": f"{ETCD_DATA_DIR}/data",
        "listen-client-urls": f"https://0.0.0.0:{ETCD_CLIENT_PORT}",
        "advertise-client-urls": f"https://{me}:{ETCD_CLIENT_PORT}",
        "listen-peer-urls": f"https://0.0.0.0:{ETCD_PEER_PORT}",
        "initial-advertise-peer-urls": f"https://{me}:{ETCD_PEER_PORT}",
        "initial-cluster": peers,
        "initial-cluster-state": "new",
        "initial-cluster-token": plan.namespace,
        "listen-metrics-urls": f"http://0.0.0.0:{ETCD_METRICS_PORT}",
        "client-cert-auth": "true",
        "trusted-ca-file": f"{ETCD_PKI_DIR}/ca.crt",
        "cert-file": f"{ETCD_PKI_DIR}/server.crt",
        "key-file": f"{ETCD_PKI_DIR}/server.key",
        "peer-client-cert-auth": "true",
        "peer-trusted-ca-file": f"{ETCD_PKI_DIR}/ca.crt",
        "peer-cert-file": f"{ETCD_PKI_DIR}/peer.crt",
        "peer-key-file": f"{ETCD_PKI_DIR}/peer.key",
        "snapshot-count": "10000",
        "experimental-initial-corrupt-check": "true",
    }
    container = {
        "name": "etcd",
        "image": plan.options.etcd_image(plan.version),
        "command": ["etcd", *_flags(defaults, plan, "etcd")],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [
            {"name": "client", "containerPort": ETCD_CLIENT_PORT},
            {"name": "peer", "containerPort": ETCD_PEER_PORT},
            {"name": "metrics", "containerPort": ETCD_METRICS_PORT},
        ],
        "volumeMounts": [{"name": "data", "mountPath": ETCD_DATA_DIR}, *_mounts(ETCD_PKI_DIR)],
        # kubeadm's probes: alive while it answers, ready once it has its quorum.
        "livenessProbe": _probe("/health?exclude=NOSPACE&serializable=true", "metrics", "HTTP"),
        "readinessProbe": _probe("/health?serializable=false", "metrics", "HTTP", failureThreshold=3),
        "resources": plan.options.component_resources(naming.ETCD),
        "securityContext": _hardened(),
    }
    claim: dict[str, Any] = {
        "metadata": {"name": "data", "labels": naming.labels(plan.cluster)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": plan.options.etcd_storage_size}},
        },
    }
    if plan.options.etcd_storage_class:
        claim["spec"]["storageClassName"] = plan.options.etcd_storage_class
    selector = naming.selector(plan.cluster, naming.ETCD)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(plan, naming.ETCD_SERVICE, naming.ETCD),
        "spec": {
            "clusterIP": "None",
            # Members find each other before any of them is ready (there is no quorum yet).
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [
                {"name": "client", "port": ETCD_CLIENT_PORT, "targetPort": "client"},
                {"name": "peer", "port": ETCD_PEER_PORT, "targetPort": "peer"},
            ],
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(plan, naming.ETCD, naming.ETCD),
        "spec": {
            "replicas": members,
            "serviceName": naming.ETCD_SERVICE,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": _template(
                plan, naming.ETCD, _pod_spec(plan, naming.ETCD, [container], certificates.ETCD_SECRET), checksum
            ),
            "volumeClaimTemplates": [claim],
        },
    }
    return [service, statefulset, _budget(plan, naming.ETCD)]


# -- kube-apiserver, kube-controller-manager, kube-scheduler -----------------------------------


def _deployment(
    plan: Plan, component: str, container: dict[str, Any], *, replicas: int, secret: str, checksum: str
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(plan, component, component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": naming.selector(plan.cluster, component)},
            # One new pod before an old one goes: the control plane keeps its capacity.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": _template(plan, component, _pod_spec(plan, component, [container], secret), checksum),
        },
    }


def apiserver(plan: Plan, checksum: str) -> list[dict[str, Any]]:
    net = plan.cluster.spec.network
    pki = PKI_DIR
    defaults = {
        "secure-port": str(plan.secure_port),
        "bind-address": "0.0.0.0",
        "allow-privileged": "true",
        "authorization-mode": "Node,RBAC",
        "enable-admission-plugins": "NodeRestriction",
        "enable-bootstrap-token-auth": "true",
        "client-ca-file": f"{pki}/ca.crt",
        "tls-cert-file": f"{pki}/apiserver.crt",
        "tls-private-key-file": f"{pki}/apiserver.key",
        "etcd-servers": ",".join(plan.etcd_client_urls),
        "etcd-cafile": f"{pki}/etcd-ca.crt",
        "etcd-certfile": f"{pki}/apiserver-etcd-client.crt",
        "etcd-keyfile": f"{pki}/apiserver-etcd-client.key",
        "kubelet-client-certificate": f"{pki}/apiserver-kubelet-client.crt",
        "kubelet-client-key": f"{pki}/apiserver-kubelet-client.key",
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "proxy-client-cert-file": f"{pki}/front-proxy-client.crt",
        "proxy-client-key-file": f"{pki}/front-proxy-client.key",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-client-ca-file": f"{pki}/front-proxy-ca.crt",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "service-account-issuer": f"https://kubernetes.default.svc.{net.dns_domain or 'cluster.local'}",
        "service-account-key-file": f"{pki}/sa.pub",
        "service-account-signing-key-file": f"{pki}/sa.key",
        "service-cluster-ip-range": net.service_cidr,
        # Every replica advertises the endpoint: one address in the `kubernetes` Service.
        "endpoint-reconciler-type": "lease",
    }
    if _is_ip(plan.endpoint.host):
        defaults["advertise-address"] = plan.endpoint.host
    container = {
        "name": naming.APISERVER,
        "image": plan.options.image(naming.APISERVER, plan.version),
        "command": [naming.APISERVER, *_flags(defaults, plan, naming.APISERVER)],
        "ports": [{"name": "https", "containerPort": plan.secure_port, "protocol": "TCP"}],
        "volumeMounts": _mounts(PKI_DIR),
        "startupProbe": _probe("/livez", "https", failureThreshold=24),
        "livenessProbe": _probe("/livez", "https"),
        "readinessProbe": _probe("/readyz", "https", periodSeconds=1, failureThreshold=3),
        "resources": plan.options.component_resources(naming.APISERVER),
        "securityContext": _hardened(),
    }
    deployment = _deployment(
        plan,
        naming.APISERVER,
        container,
        replicas=plan.options.apiserver_replicas,
        secret=certificates.APISERVER_SECRET,
        checksum=checksum,
    )
    return [deployment, _budget(plan, naming.APISERVER)]


def controller_manager(plan: Plan, checksum: str) -> list[dict[str, Any]]:
    net = plan.cluster.spec.network
    conf = f"{PKI_DIR}/{certificates.CONTROLLER_MANAGER_CONF}"
    defaults = {
        "kubeconfig": conf,
        "authentication-kubeconfig": conf,
        "authorization-kubeconfig": conf,
        "bind-address": "0.0.0.0",
        "secure-port": str(CONTROLLER_MANAGER_PORT),
        "client-ca-file": f"{PKI_DIR}/ca.crt",
        "cluster-name": plan.cluster.metadata.name,
        "cluster-signing-cert-file": f"{PKI_DIR}/ca.crt",
        "cluster-signing-key-file": f"{PKI_DIR}/ca.key",
        "controllers": "*,bootstrapsigner,tokencleaner",
        "leader-elect": "true",
        "requestheader-client-ca-file": f"{PKI_DIR}/front-proxy-ca.crt",
        "root-ca-file": f"{PKI_DIR}/ca.crt",
        "service-account-private-key-file": f"{PKI_DIR}/sa.key",
        "use-service-account-credentials": "true",
        "allocate-node-cidrs": "true",
        "cluster-cidr": net.pod_cidr,
        "service-cluster-ip-range": net.service_cidr,
    }
    container = {
        "name": naming.CONTROLLER_MANAGER,
        "image": plan.options.image(naming.CONTROLLER_MANAGER, plan.version),
        "command": [naming.CONTROLLER_MANAGER, *_flags(defaults, plan, naming.CONTROLLER_MANAGER)],
        "ports": [{"name": "https", "containerPort": CONTROLLER_MANAGER_PORT, "protocol": "TCP"}],
        "volumeMounts": _mounts(PKI_DIR),
        "startupProbe": _probe("/healthz", "https", failureThreshold=24),
        "livenessProbe": _probe("/healthz", "https"),
        "resources": plan.options.component_resources(naming.CONTROLLER_MANAGER),
        "securityContext": _hardened(),
    }
    deployment = _deployment(
        plan,
        naming.CONTROLLER_MANAGER,
        container,
        replicas=plan.options.controller_manager_replicas,
        secret=certificates.CONTROLLER_MANAGER_SECRET,
        checksum=checksum,
    )
    return [deployment, _budget(plan, naming.CONTROLLER_MANAGER)]


def scheduler(plan: Plan, checksum: str) -> list[dict[str, Any]]:
    conf = f"{PKI_DIR}/{certificates.SCHEDULER_CONF}"
    defaults = {
        "kubeconfig": conf,
        "authentication-kubeconfig": conf,
        "authorization-kubeconfig": conf,
        "bind-address": "0.0.0.0",
        "secure-port": str(SCHEDULER_PORT),
        "leader-elect": "true",
    }
    container = {
        "name": naming.SCHEDULER,
        "image": plan.options.image(naming.SCHEDULER, plan.version),
        "command": [naming.SCHEDULER, *_flags(defaults, plan, naming.SCHEDULER)],
        "ports": [{"name": "https", "containerPort": SCHEDULER_PORT, "protocol": "TCP"}],
        "volumeMounts": _mounts(PKI_DIR),
        "startupProbe": _probe("/healthz", "https", failureThreshold=24),
        "livenessProbe": _probe("/healthz", "https"),
        "resources": plan.options.component_resources(naming.SCHEDULER),
        "securityContext": _hardened(),
    }
    deployment = _deployment(
        plan,
        naming.SCHEDULER,
        container,
        replicas=plan.options.scheduler_replicas,
        secret=certificates.SCHEDULER_SECRET,
        checksum=checksum,
    )
    return [deployment, _budget(plan, naming.SCHEDULER)]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


WORKLOADS = (naming.APISERVER, naming.CONTROLLER_MANAGER, naming.SCHEDULER)
