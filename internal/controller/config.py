"""tke-controller's configuration (TOML, see deploy/controller/controller.toml). Every option
has a default; secrets come from environment variables named here."""

from __future__ import annotations

from dataclasses import dataclass, field

from tke.internal.controller.client import ApiserverConfig
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.provider.addresses import AddressConfig
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.provider.ssh import SSHOptions
from tke.internal.storage.etcd import EtcdConfig


@dataclass(frozen=True)
class LeaderConfig:
    # Off only for a single controller in development: two unelected controllers would run
    # the same steps at once.
    enabled: bool = True
    # Key of the leader lock under etcd.prefix.
    key: str = "/leader/tke-controller"
    # Lease TTL, seconds: a dead leader is replaced within about this long.
    ttl: int = 10
    # This process's name in the lock; empty means host name and process id.
    identity: str = ""


@dataclass(frozen=True)
class ControllerConfig:
    apiserver: ApiserverConfig = field(default_factory=ApiserverConfig)
    # etcd holds the leader lock and the credential catalogue; objects are read and written
    # through the apiserver.
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    leader: LeaderConfig = field(default_factory=LeaderConfig)
    # Workers per controller (clusters and machines each have their own).
    workers: int = 4
    # Workers of a controller that one tenant's objects may hold at once; 0: half of `workers`
    # (at least 1). A tenant's machines and clusters can make each reconcile last as long as
    # its time limits allow: the rest is left for the other tenants.
    tenant_workers: int = 0
    # Seconds between full resyncs of the informers' caches to the controllers.
    resync: float = 300.0
    # Seconds between health checks of Running clusters and machines.
    health_interval: float = 60.0
    # Failed attempts of a step before the object goes to Failed (a step may set its own).
    max_retries: int = 5
    # Backoff between attempts: base * 2**(n-1) seconds, at most retry_max_delay.
    retry_base_delay: float = 2.0
    retry_max_delay: float = 120.0
    ssh: SSHOptions = field(default_factory=SSHOptions)
    # Where a tenant's objects may send the controller: SSH to machines, an imported cluster's
    # API server. Configure tke-apiserver's [machines] alike (tke.internal.provider.addresses).
    machines: AddressConfig = field(default_factory=AddressConfig)
    # Credentials that objects name in credential_ref, as "TENANT/NAME": each of one tenant.
    credentials: dict[str, CredentialConfig] = field(default_factory=dict)
    # Providers by spec.type. Empty: every installed provider with its default options.
    cluster_providers: dict[str, ProviderConfig] = field(default_factory=dict)
    machine_providers: dict[str, ProviderConfig] = field(default_factory=dict)
    # The Kubernetes API client of the clusters' own API servers ("module:Class" or an entry
    # point of tke.cluster_apis, with its options; a tke.internal.provider.clusterapi.ClusterAPIs).
    # Empty: the built-in one on lightkube (KubeClusterAPIs: options timeout, drain_poll).
    cluster_api: ProviderConfig = field(default_factory=ProviderConfig)
    log_level: str = "info"
    # "console" or "json" (one object per line).
    log_format: str = "console"
    # Prometheus metrics (work queues, reconciles) at http://<address>/metrics; empty disables.
    metrics_address: str = ""

    def __post_init__(self) -> None:
        if self.tenant_workers < 0:
            raise ValueError("tenant_workers must be 0 (half of workers) or more")

    @property
    def tenant_share(self) -> int:
        """Keys of one tenant a controller's workers take at once (`tenant_workers`)."""
        return self.tenant_workers or max(1, self.workers // 2)
