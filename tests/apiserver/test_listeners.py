"""The apiserver's listeners: TLS, mutual TLS and a unix socket."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from tests.support.apiserver import local_config, start, stop
from tests.support.pki import TestCA
from tke.internal.rpc.server import ListenConfig, TLSConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc


def read(path: str) -> bytes:
    return Path(path).read_bytes()


async def test_tls_and_unix_socket(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    server_cert = ca.issue("server", common_name="tke-apiserver", hosts=("127.0.0.1", "localhost"))
    socket = tmp_path / "run" / "api.sock"
    listen = ListenConfig(
        address="127.0.0.1:0",
        unix_socket=str(socket),
        tls=TLSConfig(cert_file=server_cert.cert_file, key_file=server_cert.key_file),
    )
    api = await start(replace(local_config(etcd_config), listen=listen))
    try:
        assert socket.stat().st_mode & 0o777 == 0o600
        creds = grpc.ssl_channel_credentials(root_certificates=read(ca.ca_file))
        async with grpc.aio.secure_channel(f"127.0.0.1:{api.port}", creds) as channel:
            listed = await cluster_pb2_grpc.ClusterServiceStub(channel).List(cluster_pb2.ListClustersRequest())
            assert listed.metadata.resource_version
        # Plaintext to a TLS port fails.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{api.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await cluster_pb2_grpc.ClusterServiceStub(channel).List(cluster_pb2.ListClustersRequest(), timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            await cluster_pb2_grpc.ClusterServiceStub(channel).List(cluster_pb2.ListClustersRequest())
    finally:
        await stop(api)


async def test_mutual_tls_refuses_clients_without_a_certificate_of_the_ca(
    etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "pki")
    other = TestCA(tmp_path / "other", name="someone-else")
    server_cert = ca.issue("server", common_name="tke-apiserver", hosts=("127.0.0.1",))
    good = ca.issue("alice", common_name="alice", client=True)
    foreign = other.issue("mallory", common_name="mallory", client=True)
    tls = TLSConfig(cert_file=server_cert.cert_file, key_file=server_cert.key_file, client_ca_file=ca.ca_file)
    api = await start(replace(local_config(etcd_config), listen=ListenConfig(address="127.0.0.1:0", tls=tls)))
    try:
        target = f"127.0.0.1:{api.port}"

        async def list_with(cert: tuple[str, str] | None) -> None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=read(ca.ca_file),
                private_key=read(cert[1]) if cert else None,
                certificate_chain=read(cert[0]) if cert else None,
            )
            async with grpc.aio.secure_channel(target, creds) as channel:
                await cluster_pb2_grpc.ClusterServiceStub(channel).List(cluster_pb2.ListClustersRequest(), timeout=30)

        await list_with((good.cert_file, good.key_file))
        for cert in (None, (foreign.cert_file, foreign.key_file)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await list_with(cert)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await stop(api)


async def test_a_second_server_on_a_socket_in_use_is_refused(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    socket = tmp_path / "api.sock"
    first = await start(replace(local_config(etcd_config), listen=ListenConfig(address="", unix_socket=str(socket))))
    try:
        with pytest.raises(OSError, match="in use by another server"):
            await start(replace(local_config(etcd_config), listen=ListenConfig(address="", unix_socket=str(socket))))
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            await cluster_pb2_grpc.ClusterServiceStub(channel).List(cluster_pb2.ListClustersRequest())
    finally:
        await stop(first)
