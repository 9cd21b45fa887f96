"""tke-ipamd's configuration (ipamd.toml): listeners, the IP storage plugin, the IP provider
plugins, the release cooldown, and the cluster's Kubernetes API with what uses it (pod ->
workload resolution, the workload watcher, the scheduler extender). Every option has a default;
see deploy/ipamd/ipamd.toml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tke.internal.auth.chain import AuthConfig
from tke.internal.ipamd.noderule import MAX_ALLOCATIONS_PER_NODE, NODE
from tke.internal.rpc.connections import DEFAULTS as CONNECTION_DEFAULTS
from tke.internal.rpc.connections import ConnectionLimits
from tke.internal.rpc.inflight import HEALTH_CHECKS, HEALTH_WATCHES
from tke.internal.rpc.server import check_socket_mode
from tke.internal.storage.etcd import EtcdConfig


@dataclass(frozen=True)
class PluginConfig:
    """A plugin: an entry point name of its group, or "module:Class"; `options` are passed to
    its constructor as keyword arguments."""

    plugin: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TCPConfig:
    """The TCP listener for operators and controllers. Empty `address` disables it. TLS is
    on when cert_file and key_file are set; client_ca_file makes it mutual."""

    address: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    # Development on loopback only: allow plaintext TCP, and TCP without authentication (every
    # caller then acts as platform administrator).
    insecure: bool = False
    # The apiserver's authentication, authorization and audit chain for TCP callers, in the
    # same format as the apiserver's [auth] (authenticators, authorizers, audit plugins).
    # Required unless insecure. The unix socket relies on its file mode.
    auth: AuthConfig = field(default_factory=AuthConfig)
    # Which tenant owns which Kubernetes namespaces (tenant -> exact names or prefixes ending
    # in "*"): its bindings and allocations belong to that tenant; other namespaces are the
    # platform's (see tke.internal.ipamd.authz).
    tenants: dict[str, list[str]] = field(default_factory=dict)
    # Where auth plugins keep their state (built-in accounts, policies): the apiserver's etcd
    # and prefix. Read only when auth.authenticators is set.
    auth_etcd: EtcdConfig = field(default_factory=EtcdConfig)


@dataclass(frozen=True)
class KubernetesConfig:
    """The Kubernetes API of the cluster whose pods tke-ipamd serves: a kubeconfig file, or the
    pod's own service account (`in_cluster`, tke-ipamd running in the cluster). With it, a pod
    whose caller names no workload is resolved from its ownerReferences. Neither: none."""

    kubeconfig: str = ""
    context: str = ""
    in_cluster: bool = False
    # Seconds per API call.
    timeout: float = 10.0
    # Run the workload watcher (tke.internal.ipamd.kube_watcher): release the addresses of
    # deleted and scaled-down workloads and of gone pods.
    watch_workloads: bool = False
    # Seconds between two saves of the watcher's resource versions (its resume points).
    cursor_interval: float = 5.0

    def __post_init__(self) -> None:
        # 0 would time every call out, or save the cursors in a busy loop.
        if self.timeout <= 0 or self.cursor_interval <= 0:
            raise ValueError("timeout and cursor_interval must be positive numbers of seconds")

    @property
    def configured(self) -> bool:
        return bool(self.kubeconfig) or self.in_cluster


@dataclass(frozen=True)
class ExtenderConfig:
    """The kube-scheduler extender (tke.internal.ipamd.extender): HTTP on `address`
    ("127.0.0.1:9040"); empty disables it. It needs [kubernetes]."""

    address: str = ""
    # Largest request body accepted: kube-scheduler sends every candidate Node in full.
    max_body_bytes: int = 64 << 20


@dataclass(frozen=True)
class IpamdConfig:
    # The node-local unix socket the CNI plugins call; empty disables it. Its mode is its access
    # control: owner only (it may drop the owner's write bit, never grant group or others), in
    # a directory nobody else can write to.
    socket: str = "/run/tke/ipamd.sock"
    socket_mode: int = 0o600
    # The node this daemon serves (tke.internal.ipamd.noderule): with it the unix socket's
    # callers allocate, release, collect and read only this node's addresses. `node_name_env`
    # names an environment variable holding it instead (a DaemonSet fills NODE_NAME from the
    # pod's spec.nodeName; one ConfigMap then serves every node); set at most one of them.
    # Neither: the socket serves every node (a hosted or central tke-ipamd).
    node_name: str = ""
    node_name_env: str = ""
    # Addresses one node may hold, attached to its containers or fixed ones retained since their
    # last container there, when a caller restricted to that node (a node identity over TCP, the
    # unix socket with a node name) allocates; beyond, its Allocate is
    # RESOURCE_EXHAUSTED (NODE_ALLOCATION_LIMIT). Operators and a socket without a node name are
    # not limited. With N replicas a node may end up to N-1 above it.
    max_allocations_per_node: int = MAX_ALLOCATIONS_PER_NODE
    tcp: TCPConfig = field(default_factory=TCPConfig)
    storage: PluginConfig = field(default_factory=lambda: PluginConfig(plugin="etcd"))
    # IP providers by the name pools refer to (pool.provider.name). "static" is always there.
    providers: dict[str, PluginConfig] = field(default_factory=dict)
    # Seconds a released address waits before it is handed out again (a pool may override).
    release_cooldown: float = 30.0
    # Seconds in-flight calls get to finish on shutdown.
    shutdown_grace: float = 5.0
    # Unary calls each listener (the unix socket, TCP) serves at once; beyond, a call is refused
    # at once with RESOURCE_EXHAUSTED and a RetryInfo (tke.internal.rpc.inflight), so a flood
    # costs a refusal per call rather than memory per call, and a TCP flood never takes the
    # node's CNI plugins' share.
    max_requests_inflight: int = 400
    # Connections each listener holds at once (None: 10,000, or what the open-file limit allows), and
    # calls in progress on each, of every kind (health watches, calls still sending their request);
    # beyond, a connection is closed, a call refused with RESOURCE_EXHAUSTED
    # (tke.internal.rpc.connections). max_streams must be above max_requests_inflight and the
    # health limits together (2,400 at the defaults).
    max_connections: int | None = None
    max_streams: int = CONNECTION_DEFAULTS.max_streams
    # Seconds a new connection has to finish its handshake, and a connection without calls is kept.
    handshake_timeout: float = CONNECTION_DEFAULTS.handshake_timeout
    connection_idle_timeout: float = CONNECTION_DEFAULTS.connection_idle_timeout
    # Streams (calls) one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS;
    # grpc clients queue calls beyond it). Bounds what one connection's resets cost (CVE-2023-44487).
    max_streams_per_connection: int = CONNECTION_DEFAULTS.max_streams_per_connection
    # Prometheus metrics (calls by method and code, latency) at http://<address>/metrics;
    # empty disables them (the default: several daemons may share a host in development).
    metrics_address: str = ""
    log_level: str = "info"
    # "console" (readable) or "json" (one object per line, with the request id).
    log_format: str = "console"
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    extender: ExtenderConfig = field(default_factory=ExtenderConfig)

    def __post_init__(self) -> None:
        check_socket_mode(self.socket_mode, "socket_mode")
        if self.node_name and self.node_name_env:
            raise ValueError("set node_name or node_name_env, not both")
        if self.node_name and not NODE.fullmatch(self.node_name):
            raise ValueError(f"node_name {self.node_name!r} is not a node name")
        if self.max_allocations_per_node < 1:
            raise ValueError(f"max_allocations_per_node {self.max_allocations_per_node} must be at least 1")
        if self.release_cooldown < 0 or self.shutdown_grace < 0:
            # As a pool's cooldown_seconds: a negative time is a typo, not "none".
            raise ValueError("release_cooldown and shutdown_grace must not be negative")
        if self.max_requests_inflight < 1:
            raise ValueError(f"max_requests_inflight {self.max_requests_inflight} must be at least 1")
        self.connections.contain(
            self.max_requests_inflight + HEALTH_WATCHES + HEALTH_CHECKS,
            f"max_requests_inflight and the health limits ({HEALTH_WATCHES} watches, {HEALTH_CHECKS} checks)",
        )

    @property
    def connections(self) -> ConnectionLimits:
        return ConnectionLimits(
            self.max_connections,
            self.max_streams,
            self.handshake_timeout,
            self.connection_idle_timeout,
            self.max_streams_per_connection,
        )
