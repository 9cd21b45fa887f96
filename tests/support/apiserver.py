"""An in-process tke-apiserver for tests and benchmarks: real gRPC on a free loopback port
over a real etcd, with stubs to call it; and builders of valid objects."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import threading
from dataclasses import dataclass, field, replace

import grpc

from tests.support import LOOPBACK_NETWORKS
from tke.internal.apiserver.app import Apiserver, ApiserverConfig, WatchConfig
from tke.internal.auth.chain import AuthConfig
from tke.internal.provider.addresses import AddressConfig
from tke.internal.rpc.server import ListenConfig
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc, machine_pb2, machine_pb2_grpc


@dataclass
class Running:
    apiserver: Apiserver
    port: int
    channel: grpc.aio.Channel
    clusters: cluster_pb2_grpc.ClusterServiceAsyncStub
    machines: machine_pb2_grpc.MachineServiceAsyncStub
    extra_channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel_of(self, token: str) -> grpc.aio.Channel:
        """A channel whose calls send `token` as a bearer token (closed by `stop`)."""
        creds = grpc.composite_channel_credentials(
            grpc.local_channel_credentials(), grpc.access_token_call_credentials(token)
        )
        channel = grpc.aio.secure_channel(self.address, creds)
        self.extra_channels.append(channel)
        return channel

    def channel_with(
        self, token: str
    ) -> tuple[cluster_pb2_grpc.ClusterServiceAsyncStub, machine_pb2_grpc.MachineServiceAsyncStub]:
        """Stubs that send `token` as a bearer token."""
        channel = self.channel_of(token)
        return cluster_pb2_grpc.ClusterServiceStub(channel), machine_pb2_grpc.MachineServiceStub(channel)


# How an apiserver answers Get and List: from its watch cache, or from etcd (watch_cache = false).
READ_PATHS = ["watch-cache", "etcd"]


def local_config(etcd_config: EtcdConfig, **changes: object) -> ApiserverConfig:
    base = ApiserverConfig(
        listen=ListenConfig(address="127.0.0.1:0"),
        etcd=etcd_config,
        watch=WatchConfig(bookmark_interval=0.5, progress_interval=0.2),
        auth=AuthConfig(),
        shutdown_grace=1.0,
        # The session's etcd is shared by every test: only tests that mean to compact it do.
        compaction_interval=0.0,
        machines=AddressConfig(allowed_networks=LOOPBACK_NETWORKS),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def start(config: ApiserverConfig) -> Running:
    apiserver = Apiserver(config)
    server = await apiserver.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Running(
        apiserver,
        server.port,
        channel,
        cluster_pb2_grpc.ClusterServiceStub(channel),
        machine_pb2_grpc.MachineServiceStub(channel),
    )


async def stop(running: Running) -> None:
    for channel in [running.channel, *running.extra_channels]:
        await channel.close()
    await running.apiserver.stop()


def cluster(name: str, labels: dict[str, str] | None = None, **spec: object) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name = name
    c.metadata.labels.update(labels or {})
    c.spec.type = "baremetal"
    c.spec.version = "1.30.2"
    c.spec.network.pod_cidr = "10.244.0.0/16"
    c.spec.network.service_cidr = "10.96.0.0/12"
    for key, value in spec.items():
        setattr(c.spec, key, value)
    return c


_ADDRESSES = itertools.count(int(ipaddress.IPv4Address("198.18.0.1")))


def next_ip() -> str:
    """An address no other machine of the session has (a machine IP is held by one object)."""
    return str(ipaddress.IPv4Address(next(_ADDRESSES)))


def machine(name: str, cluster_name: str, ip: str = "", labels: dict[str, str] | None = None) -> machine_pb2.Machine:
    m = machine_pb2.Machine()
    m.metadata.name = name
    m.metadata.labels.update(labels or {})
    m.spec.cluster_name = cluster_name
    m.spec.type = "baremetal"
    m.spec.ip = ip or next_ip()
    return m


class ThreadedApiserver:
    """An apiserver on its own event loop in a background thread, for synchronous tests (for
    example hypothesis, which drives a plain function)."""

    def __init__(self, config: ApiserverConfig) -> None:
        self.config = config
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._apiserver: Apiserver | None = None

    def __enter__(self) -> ThreadedApiserver:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)  # grpc.aio objects are made in __init__ and need it
            self._loop = loop
            try:
                self._apiserver = Apiserver(self.config)
                server = loop.run_until_complete(self._apiserver.start())
                self.port = server.port
            except BaseException as err:  # reported to the starting thread
                failure.append(err)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._apiserver.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="apiserver", daemon=True)
        self._thread.start()
        if not started.wait(60):
            raise RuntimeError("the apiserver did not start within 60s")
        if failure:
            raise failure[0]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)


def baremetal_worker(name: str, cluster_name: str, ip: str, credential: str = "ops-key") -> machine_pb2.Machine:
    """A baremetal worker Machine the controller logs in to at `ip` with `credential`."""
    m = machine_pb2.Machine()
    m.metadata.name = name
    m.spec.cluster_name = cluster_name
    m.spec.type = "baremetal"
    m.spec.ip = ip
    m.spec.credential_ref = credential
    m.spec.role = machine_pb2.MACHINE_ROLE_WORKER
    return m


def imported_cluster(name: str, url: str, credential: str) -> cluster_pb2.Cluster:
    """An imported Cluster: the API server at `url`, reached with `credential`."""
    c = cluster_pb2.Cluster()
    c.metadata.name = name
    c.spec.type = "imported"
    c.spec.api_server_url = url
    c.spec.credential_ref = credential
    return c
