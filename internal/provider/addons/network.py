"""The network add-on of a cluster the platform builds: the Kubernetes objects that install
cni-switch, tke-ipamc and the delegates' configuration on every node, run tke-ipamd, and wire
kube-scheduler to tke-ipamd's extender, rendered per cluster from its spec.

Built in Python, as data, rather than from text templates: every value from a spec (a tenant's
input) lands in a field of a dict, never in YAML text, so no value can change the structure of
a manifest; the objects are checked against Kubernetes' own OpenAPI schemas for the cluster's
version in the tests (kubernetes-validate, strict) and by the API server when applied.

What a cluster gets, in namespace `kube-system` (`options.namespace`):
- always: ServiceAccount, ClusterRole (get nodes) and ClusterRoleBinding `tke-cni`/`tke:cni`;
  ConfigMap `tke-cni` (the CNI configuration list of the cluster's network mode, with the
  node's own values left as placeholders, tke.internal.provider.addons.nodevalues); DaemonSet
  `tke-cni` on every node (every taint tolerated, host network: it runs before any pod network
  exists), whose container, tke-cni-install, copies the platform's runtime and the plugins'
  launchers into the host's CNI directories and writes the configuration (as
  deploy/cni/install-node.sh does by hand).
- with tke-ipamd (network modes FIXED_IP and SUBNET_IP): ServiceAccount, ClusterRole and
  ClusterRoleBinding `tke-ipamd`/`tke:ipamd`, with exactly what it reads (get, list and watch
  of pods, nodes, statefulsets, deployments and replicasets); ConfigMap `tke-ipamd` (two
  ipamd.toml files); DaemonSet `tke-ipamd`: the node-local socket the CNI plugins call
  (restricted to its node: `node_name_env`, the pod's spec.nodeName), pod -> workload
  resolution, and the scheduler extender on loopback; Deployment `tke-ipamd-watcher`:
  the workload watcher (leader-free replicas). kube-scheduler is pointed at the extender by
  `scheduler_configuration` (a KubeSchedulerConfiguration file on every control-plane machine,
  which the cluster provider writes and names in kubeadm's ClusterConfiguration).

The network mode chooses cni-switch's default network: BRIDGE (and unset) `bridge` (a node
bridge, host-local addresses from the node's pod range, masquerade); FIXED_IP `fixed` (a node
bridge, tke-ipamc: addresses from tke-ipamd's pools kept across restarts, release policy
immutable); SUBNET_IP `subnet` (macvlan on `options.subnet_interface`, tke-ipamc: addresses of
the node's subnet pool, freed with the pod). Every mode with tke-ipamd also offers the others'
networks, which a workload's binding (or CNI_ARGS TKE_NETWORK) chooses.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tke.internal.config.loader import ConfigError, from_dict
from tke.internal.provider.addons import nodevalues
from tke.internal.provider.kube import config as kubecfg
from tke.platform.v1 import cluster_pb2

Manifest = dict[str, Any]

IPAMD_SOCKET = "/run/tke/ipamd.sock"
CONFLIST = "10-tke.conflist"
# Where the platform's runtime (a relocatable Python with the tke package) is in the image, and
# where tke-cni-install puts it on the node.
RUNTIME = "/opt/tke"
HOST = "/host"
SCHEDULER_CONFIG = "/etc/kubernetes/tke-scheduler.yaml"
SCHEDULER_KUBECONFIG = "/etc/kubernetes/scheduler.conf"
PART_OF = "tke-network"
MANAGED_BY = "tke-platform"

BRIDGE = cluster_pb2.NETWORK_MODE_BRIDGE
FIXED_IP = cluster_pb2.NETWORK_MODE_FIXED_IP
SUBNET_IP = cluster_pb2.NETWORK_MODE_SUBNET_IP
DEFAULT_NETWORK: dict[int, str] = {BRIDGE: "bridge", FIXED_IP: "fixed", SUBNET_IP: "subnet"}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def platform_version() -> str:
    try:
        return importlib.metadata.version("tke")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class NetworkAddonOptions:
    """The platform's options for the network add-on (the cluster providers' `network_addon`)."""

    # The image holding the platform's runtime at /opt/tke (a relocatable Python with the tke
    # package: /opt/tke/bin/python3, tke-ipamd, tke-cni-install). The project builds no image.
    image_repository: str = "tke/network"
    image_tag: str = ""  # empty: the platform's version
    image_pull_policy: str = "IfNotPresent"
    namespace: str = "kube-system"
    # tke-ipamd's IP storage: an etcd each cluster's ipamds share. `{tenant}` and `{cluster}`
    # in the prefix become the cluster's: by default every cluster's pools, bindings and
    # addresses are its own.
    etcd_endpoints: Sequence[str] = ("127.0.0.1:2379",)
    etcd_prefix: str = "/tke/clusters/{tenant}/{cluster}"
    # A Secret in `namespace` with ca.crt, tls.crt and tls.key for TLS to etcd; empty: plaintext.
    etcd_tls_secret: str = ""
    release_cooldown: float = 30.0
    # The scheduler extender's port on each node's loopback.
    extender_port: int = 9040
    # Whether kube-scheduler goes on without the extender when it cannot reach it (pods with
    # a binding may then land on a node their pool does not serve); false: it retries the pod.
    extender_ignorable: bool = False
    watcher_replicas: int = 1
    # The node interface macvlan puts SUBNET_IP pods on.
    subnet_interface: str = "eth0"

    def __post_init__(self) -> None:
        # Values the cluster's API server would refuse in every manifest, retried for ever.
        problems = []
        if self.image_pull_policy not in PULL_POLICIES:
            problems.append(f"image_pull_policy must be one of {', '.join(PULL_POLICIES)}")
        if not 1 <= self.extender_port <= 65535:
            problems.append("extender_port must be between 1 and 65535")
        if self.watcher_replicas < 0:
            problems.append("watcher_replicas must not be negative")
        if self.release_cooldown < 0:
            problems.append("release_cooldown must not be negative")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def image(self) -> str:
        return f"{self.image_repository}:{self.image_tag or platform_version()}"


def uses_ipamd(cluster: cluster_pb2.Cluster) -> bool:
    return cluster.spec.network.mode in (FIXED_IP, SUBNET_IP)


def mode_of(cluster: cluster_pb2.Cluster) -> int:
    return cluster.spec.network.mode or BRIDGE


# -- the CNI configuration -----------------------------------------------------------------------


def _bridge_network() -> Manifest:
    return {
        "cniVersion": "1.0.0",
        "name": "tke-bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "tke0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": nodevalues.NODE_POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _ipamc(release_policy: str) -> Manifest:
    return {
        "type": "tke-ipamc",
        "ipamd": {"address": IPAMD_SOCKET, "timeout": 2},
        "node": nodevalues.NODE_NAME,
        "nodeIP": nodevalues.NODE_IP,
        "releasePolicy": release_policy,
    }


def cni_configuration(cluster: cluster_pb2.Cluster, options: NetworkAddonOptions) -> Manifest:
    """The runtime's configuration list: cni-switch, its networks, its default by mode."""
    networks: dict[str, Manifest] = {"bridge": _bridge_network()}
    switch: Manifest = {
        "type": "cni-switch",
        "capabilities": {"portMappings": True},
        "stateDir": "/var/lib/cni/tke-switch",
    }
    if uses_ipamd(cluster):
        networks["fixed"] = {
            "cniVersion": "1.0.0",
            "name": "tke-fixed",
            "plugins": [{"type": "bridge", "bridge": "tke1", "isGateway": True, "ipam": _ipamc("immutable")}],
        }
        networks["subnet"] = {
            "cniVersion": "1.0.0",
            "name": "tke-subnet",
            "plugins": [
                {"type": "macvlan", "master": options.subnet_interface, "mode": "bridge", "ipam": _ipamc("podDelete")}
            ],
        }
        switch["ipamd"] = {"address": IPAMD_SOCKET, "timeout": 2}
    switch["defaultNetwork"] = DEFAULT_NETWORK[mode_of(cluster)]
    switch["networks"] = networks
    return {"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "tke", "plugins": [switch]}


# -- tke-ipamd's configuration -------------------------------------------------------------------


def _toml(value: Any) -> str:
    # JSON's strings, numbers, booleans and arrays of them are TOML's too.
    return json.dumps(value)


def ipamd_configuration(cluster: cluster_pb2.Cluster, options: NetworkAddonOptions, *, watcher: bool) -> str:
    """ipamd.toml for the node agent (socket, extender) or for the workload watcher."""
    prefix = options.etcd_prefix.replace("{tenant}", cluster.metadata.tenant_id or "default").replace(
        "{cluster}", cluster.metadata.name
    )
    lines = [
        f"socket = {_toml('' if watcher else IPAMD_SOCKET)}",
        # The node agent's socket serves its own node only (the DaemonSet's NODE_NAME is the
        # pod's spec.nodeName): one node's CNI plugins never release another node's addresses.
        *([] if watcher else [f"node_name_env = {_toml('NODE_NAME')}"]),
        f"release_cooldown = {_toml(float(options.release_cooldown))}",
        "",
        "[storage]",
        'plugin = "etcd"',
        "[storage.options]",
        f"endpoints = {_toml(list(options.etcd_endpoints))}",
        f"prefix = {_toml(prefix)}",
        # The prefix is the cluster's name: the uid tells it from a deleted cluster of that name.
        f"cluster_uid = {_toml(cluster.metadata.uid)}",
    ]
    if options.etcd_tls_secret:
        lines += [f"{k} = {_toml('/etc/tke-ipamd/etcd/' + f)}" for k, f in
                  (("ca_file", "ca.crt"), ("cert_file", "tls.crt"), ("key_file", "tls.key"))]  # fmt: skip
    lines += ["", "[kubernetes]", "in_cluster = true"]
    if watcher:
        lines.append("watch_workloads = true")
    else:
        lines += ["", "[extender]", f"address = {_toml(f'127.0.0.1:{options.extender_port}')}"]
    return "\n".join(lines) + "\n"


def scheduler_configuration(options: NetworkAddonOptions) -> Manifest:
    """kube-scheduler's KubeSchedulerConfiguration with tke-ipamd's extender (on the control-plane
    node's own loopback: kube-scheduler runs on the host network)."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        # What kubeadm passes as flags, which a configuration file replaces.
        "clientConnection": {"kubeconfig": SCHEDULER_KUBECONFIG},
        "leaderElection": {"leaderElect": True},
        "extenders": [
            {
                "urlPrefix": f"http://127.0.0.1:{options.extender_port}",
                "filterVerb": "filter",
                "prioritizeVerb": "prioritize",
                "weight": 1,
                "nodeCacheCapable": False,
                "ignorable": options.extender_ignorable,
                "httpTimeout": "5s",
            }
        ],
    }


def scheduler_file(cluster: cluster_pb2.Cluster, options: NetworkAddonOptions) -> bytes | None:
    """What SCHEDULER_CONFIG holds on every control-plane machine of the cluster when its network
    mode uses tke-ipamd; None otherwise (no file, and kubeadm's ClusterConfiguration names none).

    Every master needs the file, not only the one kubeadm init runs on: a control-plane join
    makes its kube-scheduler static pod from the ClusterConfiguration init stored (ConfigMap
    kube-system/kubeadm-config), which mounts this path with pathType File."""
    if not uses_ipamd(cluster):
        return None
    return kubecfg.documents(scheduler_configuration(options)).encode()


# -- the objects ---------------------------------------------------------------------------------


def _labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def _meta(name: str, namespace: str = "", *, component: str = "") -> Manifest:
    meta: Manifest = {"name": name, "labels": _labels(component or name)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _rbac(name: str, role: str, namespace: str, rules: list[Manifest]) -> list[Manifest]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, namespace)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(role, component=name),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(role, component=name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


IPAMD_RULES: list[Manifest] = [
    {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["apps"],
        "resources": ["statefulsets", "deployments", "replicasets"],
        "verbs": ["get", "list", "watch"],
    },
]
CNI_RULES: list[Manifest] = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]


def _env(name: str, path: str) -> Manifest:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _host_path(name: str, path: str, kind: str = "DirectoryOrCreate") -> Manifest:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def _pod_spec(service_account: str, containers: list[Manifest], volumes: list[Manifest], *,
              tolerations: list[Manifest], priority: str) -> Manifest:  # fmt: skip
    return {
        "serviceAccountName": service_account,
        "hostNetwork": True,  # before, and beside, any pod network
        "dnsPolicy": "ClusterFirstWithHostNet",
        "priorityClassName": priority,
        "tolerations": tolerations,
        "containers": containers,
        "volumes": volumes,
    }


EVERY_TAINT: list[Manifest] = [{"operator": "Exists"}]
RESOURCES: Manifest = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def _cni_objects(cluster: cluster_pb2.Cluster, options: NetworkAddonOptions) -> list[Manifest]:
    ns = options.namespace
    conflist = json.dumps(cni_configuration(cluster, options), indent=2, sort_keys=True) + "\n"
    install = {
        "name": "install",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": [
            f"{RUNTIME}/bin/tke-cni-install",
            "--config-dir",
            "/etc/tke-cni",
            "--host",
            HOST,
            "--runtime",
            RUNTIME,
            "--wait",
        ],
        "env": [_env("NODE_NAME", "spec.nodeName"), _env("NODE_IP", "status.hostIP")],
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/tke-cni", "readOnly": True},
            {"name": "cni-bin", "mountPath": f"{HOST}/opt/cni/bin"},
            {"name": "cni-conf", "mountPath": f"{HOST}/etc/cni/net.d"},
            {"name": "tke-runtime", "mountPath": f"{HOST}{RUNTIME}"},
        ],
        "readinessProbe": {"exec": {"command": ["test", "-f", f"{HOST}/etc/cni/net.d/{CONFLIST}"]}, "periodSeconds": 5},
        "resources": RESOURCES,
    }
    volumes = [
        {"name": "config", "configMap": {"name": "tke-cni"}},
        _host_path("cni-bin", "/opt/cni/bin"),
        _host_path("cni-conf", "/etc/cni/net.d"),
        _host_path("tke-runtime", RUNTIME),
    ]
    return [
        *_rbac("tke-cni", "tke:cni", ns, CNI_RULES),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("tke-cni", ns), "data": {CONFLIST: conflist}},
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _meta("tke-cni", ns),
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": "tke-cni"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": _labels("tke-cni")},
                    "spec": _pod_spec(
                        "tke-cni", [install], volumes, tolerations=EVERY_TAINT, priority="system-node-critical"
                    ),
                },
            },
        },
    ]


def _ipamd_container(options: NetworkAddonOptions, config: str) -> Manifest:
    mounts = [{"name": "config", "mountPath": "/etc/tke-ipamd", "readOnly": True}]
    if options.etcd_tls_secret:
        mounts.append({"name": "etcd-tls", "mountPath": "/etc/tke-ipamd/etcd", "readOnly": True})
    return {
        "name": "ipamd",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": [f"{RUNTIME}/bin/tke-ipamd", "--config", f"/etc/tke-ipamd/{config}"],
        "env": [_env("NODE_NAME", "spec.nodeName")],
        "volumeMounts": mounts,
        "resources": RESOURCES,
    }


def _ipamd_volumes(options: NetworkAddonOptions) -> list[Manifest]:
    volumes: list[Manifest] = [{"name": "config", "configMap": {"name": "tke-ipamd"}}]
    if options.etcd_tls_secret:
        volumes.append({"name": "etcd-tls", "secret": {"secretName": options.etcd_tls_secret, "defaultMode": 0o400}})
    return volumes


def _ipamd_objects(cluster: cluster_pb2.Cluster, options: NetworkAddonOptions) -> list[Manifest]:
    ns = options.namespace
    agent = _ipamd_container(options, "ipamd.toml")
    agent["volumeMounts"].append({"name": "run-tke", "mountPath": "/run/tke"})
    agent["readinessProbe"] = {
        "httpGet": {"host": "127.0.0.1", "port": options.extender_port, "path": "/healthz"},
        "periodSeconds": 5,
    }
    watcher = _ipamd_container(options, "watcher.toml")
    masters: list[Manifest] = [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"},
    ]
    data = {
        "ipamd.toml": ipamd_configuration(cluster, options, watcher=False),
        "watcher.toml": ipamd_configuration(cluster, options, watcher=True),
    }
    return [
        *_rbac("tke-ipamd", "tke:ipamd", ns, IPAMD_RULES),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("tke-ipamd", ns), "data": data},
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _meta("tke-ipamd", ns),
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": "tke-ipamd"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": _labels("tke-ipamd")},
                    "spec": _pod_spec(
                        "tke-ipamd",
                        [agent],
                        [*_ipamd_volumes(options), _host_path("run-tke", "/run/tke")],
                        tolerations=EVERY_TAINT,
                        priority="system-node-critical",
                    ),
                },
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta("tke-ipamd-watcher", ns),
            "spec": {
                "replicas": options.watcher_replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "tke-ipamd-watcher"}},
                "template": {
                    "metadata": {"labels": _labels("tke-ipamd-watcher")},
                    "spec": _pod_spec(
                        "tke-ipamd",
                        [watcher],
                        _ipamd_volumes(options),
                        tolerations=masters,
                        priority="system-cluster-critical",
                    ),
                },
            },
        },
    ]


def render(cluster: cluster_pb2.Cluster, options: NetworkAddonOptions | None = None) -> list[Manifest]:
    """Every object of the cluster's network add-on, in the order to apply them."""
    options = options or NetworkAddonOptions()
    objects = _cni_objects(cluster, options)
    if uses_ipamd(cluster):
        objects += _ipamd_objects(cluster, options)
    return objects


def workloads(objects: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of the rolled-out workloads among `objects`."""
    return [
        (str(o["kind"]), str(o["metadata"]["namespace"]), str(o["metadata"]["name"]))
        for o in objects
        if o.get("kind") in ("DaemonSet", "Deployment")
    ]


def options_from(raw: Mapping[str, Any] | None) -> NetworkAddonOptions:
    """The options from a provider's configuration table; unknown keys are a ValueError."""
    raw = dict(raw or {})
    known = set(NetworkAddonOptions.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"network_addon: unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
    try:
        return from_dict(NetworkAddonOptions, raw, "network_addon")
    except ConfigError as err:  # a string for etcd_endpoints, a text for extender_port, ...
        raise ValueError(str(err)) from None
