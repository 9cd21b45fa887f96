"""Rules: what a tenant's objects make controllers act on stays in that tenant.

- A machine IP is held by one object at a time across every tenant: a second claim (a
  Machine's spec.ip or a cluster's spec.machines[].ip, in any spelling of the address) is
  FAILED_PRECONDITION (MACHINE_IP) naming the field and, for another tenant's holder, not
  naming it; also under racing creates. Deleting the holder, or moving it to another address,
  frees the address.
- A credential_ref reaches only a credential of its object's tenant: the apiserver refuses a
  name its tenant does not have (FAILED_PRECONDITION, CREDENTIAL, naming the field) or a
  qualified name (INVALID_ARGUMENT), and tke-controller, for an object that got past the
  apiserver some other way, resolves in the object's tenant and never sends another tenant's
  secret anywhere.

Against a real apiserver with token authentication and the policy centre (each tenant admin
is admin of its own tenant only), real etcd, and a real tke-controller with the imported
provider against HTTPS servers the test runs."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from tests.security.tenancy import ALICE, BOB, ROOT, Api, api_of, start_secured
from tests.support.apiserver import Running, baremetal_worker, imported_cluster, stop
from tests.support.controller import controller_config, credentials_published, publish_credentials
from tests.support.pki import TestCA
from tests.support.rpc import bad_request_fields, detail_of, expect_error
from tests.support.waiting import wait_for
from tke.internal.controller.client import ApiserverConfig
from tke.internal.controller.manager import Controller
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.platform.v1 import cluster_pb2, machine_pb2

REFUSED = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
async def secured(etcd_config: EtcdConfig, tmp_path: Path) -> AsyncIterator[Running]:
    running = await start_secured(etcd_config, tmp_path)
    try:
        yield running
    finally:
        await stop(running)


def baremetal(name: str, *machines: tuple[str, str]) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name = name
    c.spec.type = "baremetal"
    c.spec.version = "1.30.2"
    c.spec.network.pod_cidr = "10.244.0.0/16"
    c.spec.network.service_cidr = "10.96.0.0/12"
    for ip, ref in machines:
        c.spec.machines.add(ip=ip, credential_ref=ref)
    if len(machines) > 1:  # several masters need a load balancer in front of them
        c.spec.control_plane_endpoint.host = "192.0.2.99"
    return c


def violation(err: grpc.aio.AioRpcError) -> Any:
    [v] = detail_of(err, error_details_pb2.PreconditionFailure).violations
    return v


async def ip_refused(call: Any, field: str, *, holder: str = "") -> None:
    """The create or update `call` is refused for its machine IP: the field named, and the
    holder named only when it is the caller's own."""
    err = await expect_error(call, REFUSED)
    v = violation(err)
    assert v.type == "MACHINE_IP" and v.subject.startswith("machine-ips/"), v
    message = err.details() or ""
    assert message.startswith(f"{field}: machine IP "), message
    if holder:
        assert f"held by {holder}" in message, message
    else:
        assert "held by an object of another tenant" in message, message


async def test_a_machine_ip_is_held_by_one_object_across_tenants(secured: Running, etcd_config: EtcdConfig) -> None:
    await publish_credentials(etcd_config, "team-a/ops-key", "team-b/ops-key")
    a, b = api_of(secured, ALICE), api_of(secured, BOB)
    await a.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("a-prod", ("192.0.2.50", "ops-key"))))
    await a.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("a-w1", "a-prod", "192.0.2.51")))
    await b.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("b-prod")))

    # Bob points at alice's hosts: as a Machine, in any spelling of the address, or as a
    # control-plane machine of his cluster.
    for ip in ("192.0.2.50", "192.0.2.51", "::ffff:192.0.2.51", "::ffff:c000:233"):
        await ip_refused(
            b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-w", "b-prod", ip))),
            "machine.spec.ip",
        )
    await ip_refused(
        b.clusters.Create(
            cluster_pb2.CreateClusterRequest(
                cluster=baremetal("b-two", ("192.0.2.60", "ops-key"), ("192.0.2.51", "ops-key"))
            )
        ),
        "cluster.spec.machines[1].ip",
    )
    # ... or by updating what he has.
    mine = await b.machines.Create(
        machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-w1", "b-prod", "192.0.2.70"))
    )
    moved = machine_pb2.Machine()
    moved.CopyFrom(mine)
    moved.spec.ip = "192.0.2.50"
    await ip_refused(b.machines.Update(machine_pb2.UpdateMachineRequest(machine=moved)), "machine.spec.ip")
    grown = baremetal("b-prod", ("192.0.2.51", "ops-key"))
    mask = field_mask_pb2.FieldMask(paths=["spec.machines"])
    await ip_refused(
        b.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=grown, update_mask=mask)),
        "cluster.spec.machines[0].ip",
    )
    assert (await b.machines.Get(machine_pb2.GetMachineRequest(name="b-w1"))).spec.ip == "192.0.2.70"
    assert not (await b.clusters.Get(cluster_pb2.GetClusterRequest(name="b-prod"))).spec.machines
    assert [c.metadata.name for c in (await b.clusters.List(cluster_pb2.ListClustersRequest())).items] == ["b-prod"]

    # Inside one tenant the holder is named.
    await ip_refused(
        a.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("a-w2", "a-prod", "192.0.2.51"))),
        "machine.spec.ip",
        holder='machine "a-w1"',
    )
    await ip_refused(
        a.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("a-w2", "a-prod", "192.0.2.50"))),
        "machine.spec.ip",
        holder='cluster "a-prod"',
    )

    # What alice lets go is free: a deleted machine, a control-plane machine moved elsewhere.
    await a.machines.Delete(machine_pb2.DeleteMachineRequest(name="a-w1"))
    await b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-w2", "b-prod", "192.0.2.51")))
    current = await a.clusters.Get(cluster_pb2.GetClusterRequest(name="a-prod"))
    current.spec.machines[0].ip = "192.0.2.52"
    await a.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=current))
    await b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-w3", "b-prod", "192.0.2.50")))
    await ip_refused(
        b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-w4", "b-prod", "192.0.2.52"))),
        "machine.spec.ip",
    )
    # Bob moving his own machine within his own addresses still works.
    mine = await b.machines.Get(machine_pb2.GetMachineRequest(name="b-w1"))
    mine.spec.ip = "192.0.2.71"
    assert (await b.machines.Update(machine_pb2.UpdateMachineRequest(machine=mine))).spec.ip == "192.0.2.71"
    await b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-w5", "b-prod", "192.0.2.70")))


async def test_an_address_with_a_zone_is_refused_not_a_new_spelling(secured: Running, etcd_config: EtcdConfig) -> None:
    # Python reads any text after "%" as an IPv6 zone: "2001:db8::50%x" would be a claim of its
    # own on alice's host, and the text after "%" (newlines, "$(...)") would reach commands and
    # haproxy.cfg. The bare address is the only spelling taken.
    await publish_credentials(etcd_config, "team-a/ops-key", "team-b/ops-key")
    a, b = api_of(secured, ALICE), api_of(secured, BOB)
    await a.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("a-v6", ("2001:db8::50", "ops-key"))))
    await b.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("b-v6")))
    for ip in ("2001:db8::50%eth0", "2001:db8::50%x\nserver evil 203.0.113.9:6443", "::ffff:192.0.2.80%$(id)"):
        err = await expect_error(
            b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-w", "b-v6", ip))),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert bad_request_fields(err) == ["machine.spec.ip"], ip
        err = await expect_error(
            b.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("b-zoned", (ip, "ops-key")))),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert bad_request_fields(err) == ["cluster.spec.machines[0].ip"], ip
    await ip_refused(
        b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-w", "b-v6", "2001:db8::50"))),
        "machine.spec.ip",
    )
    assert [m.metadata.name for m in (await b.machines.List(machine_pb2.ListMachinesRequest())).items] == []


async def test_installed_masters_in_status_are_held_like_the_spec(secured: Running, etcd_config: EtcdConfig) -> None:
    # status.control_plane lists the masters that scaling in and teardown log in to and reset,
    # also after they left the spec. Status is the platform's to write: bob (admin of team-b)
    # may not write it at all (tests/security/test_status_is_the_platforms.py). The writer here
    # is a platform administrator, as the controller is: its write is held to the same address
    # rule, so that even a status written in error (or with the controller's stolen token)
    # naming alice's master, then bob deleting his cluster, would not have it reset.
    await publish_credentials(etcd_config, "team-a/ops-key", "team-b/ops-key")
    a, b, platform = api_of(secured, ALICE), api_of(secured, BOB), api_of(secured, ROOT)
    await a.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("a-st", ("192.0.2.90", "ops-key"))))
    mine = await b.clusters.Create(
        cluster_pb2.CreateClusterRequest(cluster=baremetal("b-st", ("192.0.2.91", "ops-key")))
    )
    forged = cluster_pb2.Cluster()
    forged.CopyFrom(mine)
    forged.status.control_plane.add(node_name="master-1").machine.CopyFrom(mine.spec.machines[0])
    forged.status.control_plane.add(node_name="a-master").machine.MergeFrom(
        cluster_pb2.ClusterMachine(ip="192.0.2.90", credential_ref="ops-key")
    )
    await expect_error(
        b.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=forged)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await ip_refused(
        platform.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=forged)),
        "cluster.status.control_plane[1].machine.ip",
    )
    # A member without a credential is a record the apiserver does not hold (a cloud's masters
    # repeat private addresses across VPCs); the baremetal provider never logs in to one.
    forged.status.control_plane[1].machine.credential_ref = ""
    await platform.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=forged))
    forged = await b.clusters.Get(cluster_pb2.GetClusterRequest(name="b-st"))
    forged.status.control_plane[1].machine.credential_ref = "ops-key"
    forged.status.control_plane[1].machine.ip = "alice-master.example.com"
    err = await expect_error(
        platform.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=forged)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_request_fields(err) == ["cluster.status.control_plane[1].machine.ip"]
    # His own master, once the platform recorded it, stays held after it leaves the spec,
    # until the controller has reset it and dropped it from status.
    del forged.status.control_plane[1:]
    recorded = await platform.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=forged))
    recorded.spec.machines[0].ip = "192.0.2.92"
    await b.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=recorded))
    await ip_refused(
        a.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("a-w9", "a-st", "192.0.2.91"))),
        "machine.spec.ip",
    )


async def test_a_managed_vip_is_held_like_a_machine_address(secured: Running, etcd_config: EtcdConfig) -> None:
    # keepalived on bob's masters would announce the VIP on their network: alice's machine
    # address there would be taken over.
    await publish_credentials(etcd_config, "team-a/ops-key", "team-b/ops-key")
    a, b = api_of(secured, ALICE), api_of(secured, BOB)
    await a.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("a-vip", ("192.0.2.100", "ops-key"))))

    def with_vip(name: str, master: str, address: str) -> cluster_pb2.Cluster:
        c = baremetal(name, (master, "ops-key"))
        c.spec.control_plane_vip.address, c.spec.control_plane_vip.interface = address, "eth0"
        return c

    await ip_refused(
        b.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=with_vip("b-vip", "192.0.2.101", "192.0.2.100"))),
        "cluster.spec.control_plane_vip.address",
    )
    await b.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=with_vip("b-vip", "192.0.2.101", "192.0.2.102")))
    await ip_refused(
        a.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("a-w", "a-vip", "192.0.2.102"))),
        "machine.spec.ip",
    )


async def test_racing_claims_of_one_ip_store_exactly_one(secured: Running, etcd_config: EtcdConfig) -> None:
    await publish_credentials(etcd_config, "team-a/ops-key", "team-b/ops-key")
    a, b = api_of(secured, ALICE), api_of(secured, BOB)
    for api, name in ((a, "a-race"), (b, "b-race")):
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal(name)))
    ip = "192.0.2.77"
    calls: list[Awaitable[machine_pb2.Machine | cluster_pb2.Cluster]] = []
    for i in range(8):
        calls.append(
            a.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker(f"a-m{i}", "a-race", ip)))
        )
        calls.append(
            b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker(f"b-m{i}", "b-race", ip)))
        )
        calls.append(a.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal(f"a-c{i}", (ip, "ops-key")))))
        calls.append(b.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal(f"b-c{i}", (ip, "ops-key")))))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError) and o.code() == REFUSED]
    assert len(winners) == 1 and len(losers) == len(calls) - 1, outcomes
    assert all(violation(err).type == "MACHINE_IP" for err in losers)

    # The winner goes: the address can be claimed again, once.
    winner = winners[0]
    api = a if winner.metadata.tenant_id == ALICE.tenant else b
    if isinstance(winner, machine_pb2.Machine):
        await api.machines.Delete(machine_pb2.DeleteMachineRequest(name=winner.metadata.name))
    else:
        await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name=winner.metadata.name))
    await b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-after", "b-race", ip)))
    await ip_refused(
        a.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("a-after", "a-race", ip))),
        "machine.spec.ip",
    )


async def test_an_ip_stays_held_until_its_object_is_gone(secured: Running, etcd_config: EtcdConfig) -> None:
    """An object being deleted (finalizers pending) still holds its address; removing the
    last finalizer removes the object and frees the address in the same write."""
    await publish_credentials(etcd_config, "team-a/ops-key", "team-b/ops-key")
    a, b = api_of(secured, ALICE), api_of(secured, BOB)
    for api, name in ((a, "a-fin"), (b, "b-fin")):
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal(name)))
    held = baremetal_worker("a-held", "a-fin", "192.0.2.88")
    held.metadata.finalizers.append("example.com/drain")
    await a.machines.Create(machine_pb2.CreateMachineRequest(machine=held))
    deleting = await a.machines.Delete(machine_pb2.DeleteMachineRequest(name="a-held"))
    assert deleting.metadata.HasField("deletion_timestamp")
    await ip_refused(
        b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-m", "b-fin", "192.0.2.88"))),
        "machine.spec.ip",
    )
    del deleting.metadata.finalizers[:]
    await a.machines.Update(machine_pb2.UpdateMachineRequest(machine=deleting))
    await expect_error(a.machines.Get(machine_pb2.GetMachineRequest(name="a-held")), grpc.StatusCode.NOT_FOUND)
    await b.machines.Create(machine_pb2.CreateMachineRequest(machine=baremetal_worker("b-m", "b-fin", "192.0.2.88")))


# -- credentials ---------------------------------------------------------------------------------

A_SECRET = "team-a-token-" + "a" * 20
B_SECRET = "team-b-token-" + "b" * 20


class KubeAPI:
    """An HTTPS server standing in for a Kubernetes API server: answers /version, the health
    endpoints and an empty node list to either tenant's token, and records the Authorization
    header of every request."""

    def __init__(self, ca: TestCA, name: str) -> None:
        files = ca.issue(name, common_name=name, hosts=("127.0.0.1",))
        self.seen: list[str] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                seen.append(auth)
                if auth not in (f"Bearer {A_SECRET}", f"Bearer {B_SECRET}"):
                    body, code = b"Unauthorized", 401
                elif self.path == "/version":
                    body, code = json.dumps({"gitVersion": "v1.30.2"}).encode(), 200
                elif self.path.startswith("/api/v1/nodes"):
                    nodes = {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}
                    body, code = json.dumps(nodes).encode(), 200
                else:
                    body, code = b"ok", 200
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(files.cert_file, files.key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def kube_apis(tmp_path: Path) -> Iterator[tuple[KubeAPI, KubeAPI, TestCA]]:
    """Alice's cluster's API server, and one bob controls."""
    ca = TestCA(tmp_path / "pki")
    servers = (KubeAPI(ca, "alices"), KubeAPI(ca, "bobs"))
    for s in servers:
        s.thread.start()
    try:
        yield servers[0], servers[1], ca
    finally:
        for s in servers:
            s.server.shutdown()
            s.server.server_close()


@contextlib.asynccontextmanager
async def running_controller(
    api: Running, etcd_config: EtcdConfig, ca: TestCA, servers: dict[str, str]
) -> AsyncIterator[None]:
    config = controller_config(
        api.address,
        etcd_config,
        apiserver=ApiserverConfig(address=api.address, token_env="TKE_SEC_CONTROLLER_TOKEN"),
        health_interval=0.5,
        credentials={
            "team-a/edge": CredentialConfig(
                token_env="TKE_SEC_TEAM_A_TOKEN", ca_file=ca.ca_file, servers=[servers["team-a/edge"]]
            ),
            "team-b/mine": CredentialConfig(
                token_env="TKE_SEC_TEAM_B_TOKEN", ca_file=ca.ca_file, servers=[servers["team-b/mine"]]
            ),
        },
    )
    task = asyncio.create_task(Controller(config).run())
    try:
        await credentials_published(etcd_config, "team-a/edge", "team-b/mine")
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def phase_of(api: Api, name: str, phase: int) -> Any:
    async def check() -> cluster_pb2.Cluster | None:
        c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name))
        return c if c.status.phase == phase else None

    return check


async def credential_refused(call: Any, field: str, ref: str) -> None:
    err = await expect_error(call, REFUSED)
    v = violation(err)
    assert (v.type, v.subject) == ("CREDENTIAL", f"credentials/team-b/{ref}"), v
    assert (err.details() or "").startswith(f'{field}: tenant "team-b" has no credential "{ref}"'), err.details()


async def test_a_credential_is_reachable_only_from_its_own_tenant(
    secured: Running,
    etcd_config: EtcdConfig,
    kube_apis: tuple[KubeAPI, KubeAPI, TestCA],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alices, bobs, ca = kube_apis
    monkeypatch.setenv("TKE_SEC_CONTROLLER_TOKEN", ROOT.token)
    monkeypatch.setenv("TKE_SEC_TEAM_A_TOKEN", A_SECRET)
    monkeypatch.setenv("TKE_SEC_TEAM_B_TOKEN", B_SECRET)
    a, b = api_of(secured, ALICE), api_of(secured, BOB)
    async with running_controller(secured, etcd_config, ca, {"team-a/edge": alices.url, "team-b/mine": bobs.url}):
        # Bob names alice's credential: as an imported cluster's, a control-plane machine's, a
        # Machine's, and by updating his own cluster onto it.
        create = b.clusters.Create(
            cluster_pb2.CreateClusterRequest(cluster=imported_cluster("steal", bobs.url, "edge"))
        )
        await credential_refused(create, "cluster.spec.credential_ref", "edge")
        create = b.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("b-bm", ("192.0.2.91", "edge"))))
        await credential_refused(create, "cluster.spec.machines[0].credential_ref", "edge")
        await b.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=baremetal("b-empty")))
        machine = baremetal_worker("b-w", "b-empty", "192.0.2.92", "edge")
        await credential_refused(
            b.machines.Create(machine_pb2.CreateMachineRequest(machine=machine)), "machine.spec.credential_ref", "edge"
        )
        own = await b.clusters.Create(
            cluster_pb2.CreateClusterRequest(cluster=imported_cluster("b-own", bobs.url, "mine"))
        )
        await wait_for(
            phase_of(b, "b-own", cluster_pb2.CLUSTER_PHASE_RUNNING), what="bob's own imported cluster running"
        )
        own.spec.credential_ref = "edge"
        own.metadata.resource_version = ""
        await credential_refused(
            b.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=own)), "cluster.spec.credential_ref", "edge"
        )
        assert (await b.clusters.Get(cluster_pb2.GetClusterRequest(name="b-own"))).spec.credential_ref == "mine"
        # A name qualified with a tenant is not a credential name at all.
        for ref in ("team-a/edge", "../team-a/edge", "team-a.edge"):
            create = b.clusters.Create(
                cluster_pb2.CreateClusterRequest(cluster=imported_cluster("qualified", bobs.url, ref))
            )
            err = await expect_error(create, grpc.StatusCode.INVALID_ARGUMENT)
            assert bad_request_fields(err) == ["cluster.spec.credential_ref"]

        # Alice uses her own credential as before.
        await a.clusters.Create(
            cluster_pb2.CreateClusterRequest(cluster=imported_cluster("a-edge", alices.url, "edge"))
        )
        await wait_for(
            phase_of(a, "a-edge", cluster_pb2.CLUSTER_PHASE_RUNNING), what="alice's imported cluster running"
        )
        assert f"Bearer {A_SECRET}" in alices.seen

        # An object that got past the apiserver (written to etcd directly, or stored before the
        # rule) is resolved in its own tenant by the controller: it fails, and bob's server
        # never sees alice's secret.
        sneaky = imported_cluster("sneaky", bobs.url, "edge")
        sneaky.metadata.tenant_id = BOB.tenant
        sneaky.metadata.uid = str(uuid.uuid4())
        sneaky.metadata.generation = 1
        store = EtcdStore(etcd_config)
        try:
            await store.create(f"{etcd_config.prefix}/clusters/{BOB.tenant}/sneaky", sneaky.SerializeToString())
        finally:
            await store.close()
        failed = await wait_for(
            phase_of(b, "sneaky", cluster_pb2.CLUSTER_PHASE_FAILED), what="the smuggled cluster failing"
        )
        assert "tenant 'team-b' has no credential 'edge'" in failed.status.message, failed.status
        assert f"Bearer {A_SECRET}" not in bobs.seen and f"Bearer {B_SECRET}" in bobs.seen


async def test_the_controller_refuses_a_credential_not_named_tenant_slash_name(etcd_config: EtcdConfig) -> None:
    config = replace(
        controller_config("127.0.0.1:1", etcd_config), credentials={"edge": CredentialConfig(token_env="X")}
    )
    with pytest.raises(ValueError, match="name it TENANT/NAME"):
        Controller(config)
