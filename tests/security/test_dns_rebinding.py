"""Rule: tke-controller connects to a host a tenant names only at an address the address policy
admitted, from that same lookup, so a DNS the tenant controls cannot answer an admitted address
to the check and loopback to the connection (DNS rebinding).

Each test plays that DNS (tests/support/resolver.py: one answer per lookup, patched over the
host's getaddrinfo, so clients that resolve by themselves get the script too): the name answers
an admitted loopback address first (where the test's server is: `machines.allowed_networks`
admits that one address) and 127.0.0.1 after. On 127.0.0.1, at the same port, is a listening
socket of the test's, which must see no connection. The connection that is made still checks
the server by its name: TLS's certificate (a name the certificate lacks is refused although
its address is in it) and SSH's known_hosts (the machine is known by its name only)."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.fake_ssh import FakeDialer
from tests.support.kube.rbac import User
from tests.support.kube.running import StandIn, running
from tests.support.ports import free_port
from tests.support.resolver import ScriptedResolver
from tests.support.sshd import SSHServer, UserKey, keypair
from tke.internal.provider.addresses import AddressConfig, AddressPolicy, AddressRefused
from tke.internal.provider.clusterapi import KubeClusterAPIs
from tke.internal.provider.contract import ClusterContext, Toolbox, Tools, reconcile_tools
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.ssh import SSHDialer, SSHOptions, Target
from tke.platform.v1 import cluster_pb2
from tke.plugins.cluster_providers.imported import ImportedClusterProvider

pytestmark = pytest.mark.timeout(60)

NAME = "api.rebind.example"
TOKEN = "rebind-token"


@dataclasses.dataclass
class Trap:
    """127.0.0.1:`port`, where no connection may arrive, and `ip`, the one loopback address the
    policy admits, where the test's server listens on the same port."""

    sock: socket.socket
    port: int
    ip: str

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def policy(self) -> AddressPolicy:
        return AddressPolicy(AddressConfig(allowed_networks=[f"{self.ip}/32"]))

    def dns(self, *names: str) -> ScriptedResolver:
        """Each of `names` answers the server's address once, then 127.0.0.1."""
        return ScriptedResolver({name: [self.ip, "127.0.0.1"] for name in names})


@contextlib.contextmanager
def trap() -> Iterator[Trap]:
    ip = f"127.0.{random.randrange(2, 250)}.{random.randrange(2, 250)}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for _ in range(20):  # a port free on both addresses
            port = free_port(ip)
            try:
                sock.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        else:
            raise RuntimeError(f"no port free on both 127.0.0.1 and {ip}")
        sock.listen(8)  # the kernel completes a handshake into the backlog: counted by connections()
        sock.setblocking(False)
        yield Trap(sock, port, ip)
    finally:
        sock.close()


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[StandIn, Trap]]:
    with (
        trap() as t,
        running(
            tmp_path / "kube",
            host=t.ip,
            port=t.port,
            server_names=(NAME,),
            tokens={TOKEN: User("importer", ("system:masters",))},
        ) as standin,
    ):
        yield standin, t


def admin(standin: StandIn, server: str) -> ClusterAccess:
    cert, key = standin.client_certificate("admin", ("system:masters",))
    return ClusterAccess(server, ca_pem=standin.ca_pem, client_cert_pem=cert, client_key_pem=key)


@contextlib.asynccontextmanager
async def tools(policy: AddressPolicy, credentials: ConfiguredCredentials | None = None) -> AsyncIterator[Tools]:
    toolbox = Toolbox(
        dialer=FakeDialer(),
        credentials=credentials or ConfiguredCredentials({}),
        cluster_apis=KubeClusterAPIs(timeout=5.0),
        addresses=policy,
    )
    async with reconcile_tools(toolbox, "default") as t:
        yield t


async def test_a_cluster_api_name_that_rebinds_to_loopback_is_never_connected_to(
    kube: tuple[StandIn, Trap], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconcile's call to a cluster's API (a tenant's control_plane_endpoint.host) goes to the
    address its one lookup admitted, with TLS verified against the name; a name that does not
    resolve is unreachable for now (temporary), as before."""
    standin, t = kube
    other = "other.rebind.example"  # resolves to the server too, but its certificate lacks it
    gone = "gone.rebind.example"
    dns = ScriptedResolver({NAME: [t.ip, "127.0.0.1"], other: [t.ip, "127.0.0.1"], gone: []})
    with dns.patched(monkeypatch):
        async with tools(t.policy()) as reconcile:
            async with reconcile.cluster_apis.connect(admin(standin, f"https://{NAME}:{t.port}")) as api:
                assert await api.ready() == "1.30.2"
                assert await api.node("missing") is None  # the same connection, kept alive
            assert dns.asked[NAME] == 1  # one connection, one lookup: the one checked
            with pytest.raises(PermanentError, match=f"certificate of https://{other}:{t.port} is not trusted"):
                async with reconcile.cluster_apis.connect(admin(standin, f"https://{other}:{t.port}")) as api:
                    await api.ready()
            with pytest.raises(TemporaryError, match=f"cannot reach https://{gone}:{t.port}: cannot resolve {gone}"):
                async with reconcile.cluster_apis.connect(admin(standin, f"https://{gone}:{t.port}")) as api:
                    await api.ready()
            # A new connection looks the name up again, and is refused what it answers now.
            async with reconcile.cluster_apis.connect(admin(standin, f"https://{NAME}:{t.port}")) as api:
                with pytest.raises(PermanentError, match=f"{NAME} resolves to 127.0.0.1 is a loopback address"):
                    await api.ready()
    assert t.connections() == 0


async def test_an_imported_clusters_name_that_rebinds_to_loopback_is_never_connected_to(
    kube: tuple[StandIn, Trap], monkeypatch: pytest.MonkeyPatch
) -> None:
    standin, t = kube
    monkeypatch.setenv("TKE_REBIND_TOKEN", TOKEN)
    url = f"https://{NAME}:{t.port}"
    credentials = ConfiguredCredentials(
        {"default/edge": CredentialConfig(token_env="TKE_REBIND_TOKEN", ca_file=standin.ca.ca_file, servers=[url])}
    )
    cluster = cluster_pb2.Cluster()
    cluster.metadata.name = "edge"
    cluster.spec.type = "imported"
    cluster.spec.api_server_url = url
    cluster.spec.credential_ref = "edge"
    provider = ImportedClusterProvider(timeout=5.0)
    with t.dns(NAME).patched(monkeypatch) as dns:
        async with tools(t.policy(), credentials) as reconcile:
            ctx = ClusterContext(obj=cluster, machines=[], tools=reconcile)
            await provider.verify(ctx)
            assert ctx.obj.status.version == "1.30.2"
            assert dns.asked[NAME] == 1
            with pytest.raises(PermanentError, match=f"{NAME} resolves to 127.0.0.1 is a loopback address"):
                await provider.verify(ctx)
    assert t.connections() == 0


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[SSHServer, Trap, Path]]:
    """An sshd known by the name NAME alone (known_hosts has no line for its address)."""
    with trap() as t:
        key_file, public = keypair(tmp_path, "id_ed25519")
        server = SSHServer(tmp_path / "sshd", UserKey(key_file, public), host=t.ip, port=t.port)
        server.start()
        try:
            known = tmp_path / "known_hosts"
            known.write_text(f"[{NAME}]:{t.port} {server.host_public}\n")
            yield server, t, known
        finally:
            server.stop()


async def test_a_machine_name_that_rebinds_to_loopback_is_never_connected_to(
    machine: tuple[SSHServer, Trap, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, t, known = machine
    credentials = ConfiguredCredentials(
        {"default/key": CredentialConfig(private_key_file=str(server.user_key.private_key_file))}
    )
    options = SSHOptions(known_hosts_file=str(known), connect_timeout=5.0, connect_attempts=1)
    dialer = SSHDialer(credentials, options, t.policy())
    target = Target(NAME, t.port, "root", "key", "default")
    with t.dns(NAME).patched(monkeypatch) as dns:
        async with dialer.connect(target) as ch:
            assert (await ch.exec("echo $((6 * 7))")).stdout == "42\n"
        assert dns.asked[NAME] == 1
        with pytest.raises(PermanentError, match=f"{NAME} resolves to 127.0.0.1 is a loopback address"):
            async with dialer.connect(target):
                pass
    assert t.connections() == 0


async def test_the_policy_connects_only_to_what_its_one_lookup_admitted() -> None:
    """The seam itself, with the resolver given to the policy: `admitted` looks a name up once
    and checks every address; `connect` connects to one of those; each call looks up anew."""
    with trap() as t:
        good = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            good.bind((t.ip, t.port))
            good.listen(8)
            dns = ScriptedResolver({NAME: [t.ip, "127.0.0.1"], "nowhere.example": []})
            policy = AddressPolicy(AddressConfig(allowed_networks=[f"{t.ip}/32"]), resolver=dns)
            sock = await policy.connect(NAME, t.port)
            with sock:
                assert sock.getpeername() == (t.ip, t.port)
            with pytest.raises(AddressRefused, match=f"^{NAME} resolves to 127.0.0.1 is a loopback address"):
                await policy.connect(NAME, t.port)
            assert dns.asked[NAME] == 2
            with pytest.raises(socket.gaierror):
                await policy.connect("nowhere.example", t.port)
            # Literal addresses are checked as written, and never looked up.
            assert [str(ip) for ip in await policy.admitted(t.ip, t.port)] == [t.ip]
            with pytest.raises(AddressRefused, match=r"127\.1 is read as 127\.0\.0\.1"):
                await policy.admitted("127.1", t.port)
            assert set(dns.asked) == {NAME, "nowhere.example"}
        finally:
            good.close()
        assert t.connections() == 0
