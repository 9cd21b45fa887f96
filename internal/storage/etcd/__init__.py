"""The Store contract implemented over etcd v3."""

from tke.internal.storage.etcd.connection import EtcdConfig, EtcdTLS
from tke.internal.storage.etcd.store import EtcdStore

__all__ = ["EtcdConfig", "EtcdStore", "EtcdTLS"]
