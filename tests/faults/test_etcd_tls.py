"""TLS to etcd with client certificates, as a production etcd is run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.apiserver import cluster, local_config, start, stop
from tests.support.etcd import EtcdProcess
from tests.support.pki import TestCA
from tke.internal.storage.etcd import EtcdConfig, EtcdStore, EtcdTLS
from tke.internal.storage.store import Unavailable
from tke.platform.v1 import cluster_pb2


async def test_apiserver_over_mutual_tls_to_etcd(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    # etcd's own health check in the test uses the server certificate as a client too.
    server = ca.issue("etcd", common_name="etcd", hosts=("127.0.0.1",), also_client=True)
    client = ca.issue("apiserver-etcd-client", common_name="tke-apiserver", client=True)
    etcd = EtcdProcess(tmp_path / "etcd", tls=(ca.ca_file, server.cert_file, server.key_file))
    etcd.start()
    try:
        tls = EtcdTLS(ca_file=ca.ca_file, cert_file=client.cert_file, key_file=client.key_file)
        api = await start(local_config(EtcdConfig(endpoints=[etcd.endpoint], tls=tls)))
        try:
            await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("over-tls")))
            got = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="over-tls"))
            assert got.metadata.uid
        finally:
            await stop(api)
        # Without a client certificate etcd refuses the connection: a clear Unavailable, in time.
        no_cert = EtcdConfig(
            endpoints=[etcd.endpoint], tls=EtcdTLS(ca_file=ca.ca_file), request_timeout=1, retry_budget=2
        )
        store = EtcdStore(no_cert)
        try:
            with pytest.raises(Unavailable):
                await asyncio.wait_for(store.current_revision(), 10)
        finally:
            await store.close()
    finally:
        etcd.stop()
