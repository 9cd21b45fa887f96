"""Rules: a tenant's objects do not make the controller go where the tenant picks.

- Machine addresses: loopback, link-local (the cloud metadata address), unspecified,
  multicast and reserved addresses are refused as INVALID_ARGUMENT naming the field, in a
  Machine's spec.ip, a cluster's spec.machines[].ip, its managed VIP, its control-plane
  endpoint and an imported cluster's API server URL (`localhost` too); `machines.allowed_networks`
  admits them; tke-controller refuses such an object stored before the rule without dialing it.
- An imported cluster's credential is pinned to its servers (`servers`, or its kubeconfig's
  server): the apiserver refuses any other api_server_url (INVALID_ARGUMENT naming it), and
  tke-controller refuses such an object stored before the rule without sending a byte to it.

Against a real apiserver, etcd and tke-controller; the places the controller must not reach
are listening sockets of the test, which must see no connection."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support import LOOPBACK_NETWORKS
from tests.support.apiserver import Running, baremetal_worker, imported_cluster, local_config, start, stop
from tests.support.controller import controller_config, credentials_published, publish_credentials
from tests.support.fake_ssh import FakeDialer
from tests.support.rpc import detail_of, expect_error
from tests.support.sshd import keypair
from tests.support.waiting import wait_for
from tke.internal.controller.manager import Controller
from tke.internal.provider.addresses import AddressConfig, AddressPolicy, AddressRefused
from tke.internal.provider.contract import Toolbox, reconcile_tools
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.errors import PermanentError
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.ssh import SSHOptions
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.platform.v1 import cluster_pb2, machine_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DEFAULTS = AddressConfig()
LAB = AddressConfig(allowed_networks=LOOPBACK_NETWORKS)


@contextlib.asynccontextmanager
async def apiserver(etcd_config: EtcdConfig, machines: AddressConfig) -> AsyncIterator[Running]:
    running = await start(local_config(etcd_config, machines=machines))
    try:
        yield running
    finally:
        await stop(running)


@contextlib.contextmanager
def listener() -> Iterator[socket.socket]:
    """A TCP port on loopback that records whether anyone connected (the kernel completes a
    handshake into the backlog whether or not the test accepts it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


def connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def baremetal(name: str, ip: str, *, port: int = 0) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name = name
    c.spec.type = "baremetal"
    c.spec.version = "1.30.2"
    c.spec.network.pod_cidr = "10.244.0.0/16"
    c.spec.network.service_cidr = "10.96.0.0/12"
    c.spec.machines.add(ip=ip, ssh_port=port, credential_ref="ops-key")
    return c


async def refused(call: Any, field: str, *words: str) -> str:
    """The call is INVALID_ARGUMENT with one BadRequest violation naming `field`; its
    description (returned) says each of `words`."""
    err = await expect_error(call, INVALID)
    violations = detail_of(err, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == [field], violations
    description = str(violations[0].description)
    for word in words:
        assert word in description, description
    return description


async def store_directly(etcd_config: EtcdConfig, kind: str, obj: Any) -> None:
    """An object stored before the rule: written to etcd as the apiserver would have."""
    obj.metadata.tenant_id = "default"
    obj.metadata.uid = str(uuid.uuid4())
    obj.metadata.generation = 1
    store = EtcdStore(etcd_config)
    try:
        await store.create(f"{etcd_config.prefix}/{kind}/default/{obj.metadata.name}", obj.SerializeToString())
    finally:
        await store.close()


def failed(api: Running, name: str) -> Any:
    async def check() -> cluster_pb2.Cluster | None:
        c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name))
        return c if c.status.phase == cluster_pb2.CLUSTER_PHASE_FAILED else None

    return check


@contextlib.asynccontextmanager
async def running_controller(
    api: Running, etcd_config: EtcdConfig, credentials: dict[str, CredentialConfig], machines: AddressConfig
) -> AsyncIterator[None]:
    config = controller_config(
        api.address,
        etcd_config,
        credentials=credentials,
        machines=machines,
        max_retries=1,
        health_interval=0.5,
        ssh=SSHOptions(connect_timeout=2.0, connect_attempts=1),
    )
    task = asyncio.create_task(Controller(config).run())
    try:
        await credentials_published(etcd_config, *credentials)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- machine addresses -------------------------------------------------------------------------


async def test_addresses_of_the_platform_host_and_metadata_service_are_refused(etcd_config: EtcdConfig) -> None:
    await publish_credentials(etcd_config, "default/ops-key", "default/edge")
    async with apiserver(etcd_config, DEFAULTS) as api:
        create = api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("lo", "127.0.0.1")))
        description = await refused(create, "cluster.spec.machines[0].ip")
        assert description == (
            "127.0.0.1 is a loopback address; the platform does not log in to its own host: "
            "set machines.allowed_networks to allow it"
        )
        for ip, words in (
            ("169.254.169.254", ("cloud metadata",)),
            ("169.254.10.1", ("link-local",)),
            ("127.8.9.10", ("loopback",)),
            ("::1", ("loopback",)),
            ("::ffff:127.0.0.1", ("127.0.0.1", "loopback")),
            ("fe80::1", ("link-local",)),
            ("fd00:ec2::254", ("cloud metadata",)),
            ("240.0.0.1", ("reserved",)),
        ):
            create = api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("bad", ip)))
            await refused(create, "cluster.spec.machines[0].ip", *words, "machines.allowed_networks")

        # A Machine's address, and an update that brings one in.
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("ok", "192.0.2.10")))
        metadata = baremetal_worker("w", "ok", "169.254.169.254")
        await refused(
            api.machines.Create(machine_pb2.CreateMachineRequest(machine=metadata)), "machine.spec.ip", "cloud metadata"
        )
        machine = await api.machines.Create(
            machine_pb2.CreateMachineRequest(machine=baremetal_worker("w", "ok", "192.0.2.11"))
        )
        machine.spec.ip = "127.0.0.1"
        await refused(api.machines.Update(machine_pb2.UpdateMachineRequest(machine=machine)), "machine.spec.ip")
        got = await api.machines.Get(machine_pb2.GetMachineRequest(name="w"))
        assert got.spec.ip == "192.0.2.11"

        # A managed VIP, an operator's endpoint, and an imported cluster's API server.
        vip = baremetal("vip", "192.0.2.20")
        vip.spec.control_plane_vip.address = "169.254.169.254"
        vip.spec.control_plane_vip.interface = "eth0"
        create = api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=vip))
        await refused(create, "cluster.spec.control_plane_vip.address", "cloud metadata")
        endpoint = baremetal("endpoint", "192.0.2.21")
        endpoint.spec.control_plane_endpoint.host = "localhost"
        create = api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=endpoint))
        await refused(create, "cluster.spec.control_plane_endpoint.host", "local host")
        for url in ("https://169.254.169.254/latest", "https://[::1]:6443", "https://api.LOCALHOST:6443"):
            create = api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=imported_cluster("imp", url, "edge")))
            await refused(create, "cluster.spec.api_server_url", "machines.allowed_networks")


# Spellings the resolver or an HTTP client reads as a refused address (inet_aton's forms, a
# trailing dot, full-width digits), and IPv6 addresses that hand one to a translator or tunnel.
OTHER_SPELLINGS = (
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.1",
    "169.254.169.254.",
    "\uff11\uff12\uff17.0.0.1",
)
TRANSLATED = (
    "::127.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::7f00:1",
    "::ffff:0:7f00:1",
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
)


async def test_no_other_spelling_of_a_refused_address_passes(etcd_config: EtcdConfig) -> None:
    await publish_credentials(etcd_config, "default/ops-key", "default/edge")
    async with apiserver(etcd_config, DEFAULTS) as api:
        for host in OTHER_SPELLINGS + TRANSLATED:
            endpoint = baremetal("endpoint", "192.0.2.21")
            endpoint.spec.control_plane_endpoint.host = host
            endpoint.spec.control_plane_endpoint.port = 22
            create = api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=endpoint))
            named = host if host in OTHER_SPELLINGS else "leads to"
            await refused(create, "cluster.spec.control_plane_endpoint.host", named, "machines.allowed_networks")
            bracketed = f"[{host}]" if ":" in host else host
            create = api.clusters.Create(
                cluster_pb2.CreateClusterRequest(cluster=imported_cluster("imp", f"https://{bracketed}:6443", "edge"))
            )
            await refused(create, "cluster.spec.api_server_url", "machines.allowed_networks")
        for ip in TRANSLATED:
            create = api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("bad", ip)))
            await refused(create, "cluster.spec.machines[0].ip", "leads to", "machines.allowed_networks")
        # A name the resolver and the HTTP client spell differently (strasse, xn--strae-oqa):
        # the name checked would not be the name dialed.
        endpoint = baremetal("endpoint", "192.0.2.21")
        endpoint.spec.control_plane_endpoint.host = "stra\u00dfe.tenant.example"
        create = api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=endpoint))
        await refused(create, "cluster.spec.control_plane_endpoint.host", "ASCII", "xn--")
        # Names and addresses that only look alike are still admitted.
        fine = baremetal("fine", "64:ff9b::c000:215")
        fine.spec.control_plane_endpoint.host = "api-127-1.example"
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=fine))
        await api.machines.Create(
            machine_pb2.CreateMachineRequest(machine=baremetal_worker("w", "fine", "2002:c000:216::1"))
        )
    lab = AddressPolicy(LAB)
    assert [lab.host_refusal(host) for host in ("127.1", "0x7f000001", "64:ff9b::7f00:1")] == [None, None, None]


async def test_allowed_networks_admit_a_lab_on_loopback(etcd_config: EtcdConfig) -> None:
    await publish_credentials(etcd_config, "default/ops-key")
    async with apiserver(etcd_config, LAB) as api:
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("lab", "127.0.0.1")))
        await api.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("w", "lab", "::1")))
        # What the lab did not allow stays refused.
        create = api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("md", "169.254.169.254")))
        await refused(create, "cluster.spec.machines[0].ip", "cloud metadata")


async def test_an_object_stored_before_the_rule_is_never_dialed_and_can_still_be_updated(
    etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = keypair(tmp_path, "id_ed25519")  # a usable key: only the address rule keeps it from dialing
    monkeypatch.setenv("TKE_ADDR_TOKEN", "addr-secret-token")
    with listener() as target:
        port = port_of(target)
        by_name, by_address = f"https://localhost:{port}", f"https://127.0.0.1:{port}"
        credentials = {
            "default/ops-key": CredentialConfig(private_key_file=str(key)),
            # Pinned to the very URLs: only the address rule stands between them and the dial.
            "default/edge": CredentialConfig(token_env="TKE_ADDR_TOKEN", servers=[by_name, by_address]),
        }
        async with apiserver(etcd_config, DEFAULTS) as api:
            await store_directly(etcd_config, "clusters", baremetal("old", "127.0.0.1", port=port))
            await store_directly(etcd_config, "clusters", imported_cluster("old-by-name", by_name, "edge"))
            await store_directly(etcd_config, "clusters", imported_cluster("old-by-address", by_address, "edge"))
            async with running_controller(api, etcd_config, credentials, DEFAULTS):
                c = await wait_for(failed(api, "old"), what="the cluster stored before the rule failing")
                assert f"root@127.0.0.1:{port}: 127.0.0.1 is a loopback address" in c.status.message, c.status
                assert "machines.allowed_networks" in c.status.message, c.status
                for name, words in (
                    ("old-by-name", "localhost names the local host"),
                    ("old-by-address", "127.0.0.1 is a loopback address"),
                ):
                    got = await wait_for(failed(api, name), what=f"{name} failing")
                    assert f"cluster.spec.api_server_url: {words}" in got.status.message, got.status
            # The address it already had does not stop an update (the controller's finalizer went
            # in that way too); bringing in another such address does.
            c.spec.display_name = "stored before the rule"
            c.metadata.resource_version = ""
            await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c))
            c.spec.machines[0].ip = "127.0.0.2"
            update = api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c))
            await refused(update, "cluster.spec.machines[0].ip", "loopback")
        assert connections(target) == 0


async def test_the_controller_checks_what_a_name_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name the apiserver cannot judge (it resolves at dial time) is resolved by the
    controller, and every address checked, before it connects (to one of those addresses:
    test_dns_rebinding.py)."""

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        address = {"metadata.example": "169.254.169.254", "fine.example": "192.0.2.7"}[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    policy = AddressPolicy(DEFAULTS)
    assert policy.host_refusal("metadata.example") is None  # a name, unresolved: the apiserver admits it
    with pytest.raises(AddressRefused) as refused:
        await policy.admitted("metadata.example", 443)
    assert str(refused.value).startswith("metadata.example resolves to 169.254.169.254 is the cloud metadata")
    assert await policy.admitted("fine.example", 443) == [ipaddress.ip_address("192.0.2.7")]
    assert AddressPolicy(LAB).refusal(ipaddress.ip_address("127.0.0.1")) is None


def test_a_bad_network_in_the_option_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match=r"machines.allowed_networks\[0\]: '127.0.0.1/8' is not a CIDR"):
        AddressConfig(allowed_networks=["127.0.0.1/8"])


# -- an imported cluster's credential is pinned to its servers ------------------------------------

KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: edge
clusters:
- name: edge
  cluster: {{server: "{server}"}}
users:
- name: edge
  user: {{token: kubeconfig-secret-token}}
contexts:
- name: edge
  context: {{cluster: edge, user: edge}}
"""


async def test_a_credential_goes_only_to_its_servers(
    etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TKE_PIN_TOKEN", "env-secret-token")
    with listener() as operators, listener() as tenants:
        pinned = f"https://127.0.0.1:{port_of(operators)}"
        elsewhere = f"https://127.0.0.1:{port_of(tenants)}"
        kubeconfig = tmp_path / "edge.kubeconfig"
        kubeconfig.write_text(KUBECONFIG.format(server=pinned))
        ca = tmp_path / "ca.crt"
        ca.write_text("")
        credentials = {
            "default/by-env": CredentialConfig(token_env="TKE_PIN_TOKEN", ca_file=str(ca), servers=[pinned + "/"]),
            "default/by-kubeconfig": CredentialConfig(kubeconfig_file=str(kubeconfig)),
            "default/no-server": CredentialConfig(token_env="TKE_PIN_TOKEN", ca_file=str(ca)),
        }
        async with apiserver(etcd_config, LAB) as api, running_controller(api, etcd_config, credentials, LAB):
            # At the apiserver: another URL, and a credential that names no server.
            for ref in ("by-env", "by-kubeconfig"):
                create = api.clusters.Create(
                    cluster_pb2.CreateClusterRequest(cluster=imported_cluster("x", elsewhere, ref))
                )
                description = await refused(create, "cluster.spec.api_server_url", f'credential "{ref}"', pinned)
                assert "secret" not in description
            create = api.clusters.Create(
                cluster_pb2.CreateClusterRequest(cluster=imported_cluster("x", elsewhere, "no-server"))
            )
            await refused(create, "cluster.spec.api_server_url", "names no API server")
            # The pinned server, in another spelling, is admitted; moving the cluster elsewhere is not.
            own = await api.clusters.Create(
                cluster_pb2.CreateClusterRequest(cluster=imported_cluster("own", pinned, "by-env"))
            )
            own.spec.api_server_url = elsewhere
            own.metadata.resource_version = ""
            await refused(
                api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=own)), "cluster.spec.api_server_url"
            )

            # At the controller: objects stored before the rule fail for good, sending nothing.
            for name, ref in (("old-env", "by-env"), ("old-kubeconfig", "by-kubeconfig"), ("old-none", "no-server")):
                await store_directly(etcd_config, "clusters", imported_cluster(name, elsewhere, ref))
            for name, words in (
                ("old-env", "is not a server of credential 'by-env'"),
                ("old-kubeconfig", "is not a server of credential 'by-kubeconfig'"),
                ("old-none", "credential 'no-server' names no API server"),
            ):
                c = await wait_for(failed(api, name), what=f"{name} failing")
                assert words in c.status.message, c.status
                assert "secret-token" not in c.status.message
        assert connections(tenants) == 0


class RecordingClusterAPIs:
    """The cluster API layer's stand-in: records the servers it was asked to connect to, and
    the address policy each access carried."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.policies: list[AddressPolicy | None] = []

    @contextlib.asynccontextmanager
    async def connect(self, access: ClusterAccess) -> AsyncIterator[Any]:
        self.asked.append(access.server)
        self.policies.append(access.addresses)
        yield None


async def test_a_reconcile_reaches_no_cluster_api_on_a_refused_address() -> None:
    """An endpoint an object stored before the rule names (a baremetal cluster's
    control_plane_endpoint or VIP, reached with the platform's client certificate) is refused
    before the cluster API layer connects."""
    recording = RecordingClusterAPIs()
    toolbox = Toolbox(dialer=FakeDialer(), credentials=ConfiguredCredentials({}), cluster_apis=recording)
    async with reconcile_tools(toolbox, "default") as tools:
        for server in (
            "https://127.0.0.1:6443",
            "https://[::ffff:169.254.169.254]:443",
            "https://localhost:6443",
            # What httpx hands to getaddrinfo, which reads it as 127.0.0.1.
            "https://127.1:6443",
            "https://2130706433:6443",
            "https://0x7f000001:6443",
            "https://[64:ff9b::a9fe:a9fe]:443",
        ):
            with pytest.raises(PermanentError, match=r"machines\.allowed_networks"):
                tools.cluster_apis.connect(ClusterAccess(server))
        async with tools.cluster_apis.connect(ClusterAccess("https://192.0.2.10:6443")):
            pass
    assert recording.asked == ["https://192.0.2.10:6443"]


async def test_a_reconcile_hands_a_cluster_apis_name_to_the_layer_with_the_policy() -> None:
    """A tenant's control_plane_endpoint.host is a name the apiserver cannot judge: the
    controller hands it to the cluster API layer with the address policy, whose connections
    look it up and connect only to an address it admitted (test_dns_rebinding.py: a name
    resolving to a refused address, or rebinding to one, is never connected to); a name that is
    refused as written never reaches the layer."""
    recording = RecordingClusterAPIs()
    policy = AddressPolicy(DEFAULTS)
    toolbox = Toolbox(
        dialer=FakeDialer(), credentials=ConfiguredCredentials({}), cluster_apis=recording, addresses=policy
    )
    async with reconcile_tools(toolbox, "default") as tools:
        with pytest.raises(PermanentError, match="not an ASCII host name"):
            tools.cluster_apis.connect(ClusterAccess("https://stra\u00dfe.tenant.example:6443"))
        for server in ("https://api.fine.example:6443", "https://routed.elsewhere.example:6443"):
            async with tools.cluster_apis.connect(ClusterAccess(server)):
                pass
    assert recording.asked == ["https://api.fine.example:6443", "https://routed.elsewhere.example:6443"]
    assert recording.policies == [policy, policy]
