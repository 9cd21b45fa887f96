"""tke-ipamd's gRPC surface, in process over real sockets and real etcd: error codes with their
google.rpc details, the unix socket's mode, TCP with TLS and token authentication, and
grpcurl's view through reflection."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support.rpc import status_of
from tests.support.tools import grpcurl
from tke.internal.auth.chain import AuthConfig
from tke.internal.auth.chain import PluginConfig as AuthPlugin
from tke.internal.ipamd.config import IpamdConfig, PluginConfig, TCPConfig
from tke.internal.ipamd.server import Ipamd
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

from .conftest import allocate_request


@dataclass
class Running:
    ipamd: Ipamd
    socket: str
    tcp_port: int
    workdir: Path


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ipamd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_certs(workdir: Path) -> tuple[str, str]:
    key, cert = workdir / "server.key", workdir / "server.crt"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture
async def running(workdir: Path, etcd_config: EtcdConfig) -> AsyncIterator[Running]:
    cert, key = make_certs(workdir)
    tokens = workdir / "tokens.csv"
    tokens.write_text("secret-token,operator,u1,system:masters,\n")
    config = IpamdConfig(
        socket=str(workdir / "ipamd.sock"),
        tcp=TCPConfig(
            address="127.0.0.1:0",
            cert_file=cert,
            key_file=key,
            # The apiserver's chain: token-file authentication, allow-all authorization.
            auth=AuthConfig(
                authenticators=[AuthPlugin("token-file", {"path": str(tokens)})],
                authorizers=[AuthPlugin("allow-all")],
            ),
            auth_etcd=etcd_config,
        ),
        storage=PluginConfig(
            plugin="etcd", options={"endpoints": list(etcd_config.endpoints), "prefix": etcd_config.prefix}
        ),
        release_cooldown=30,
    )
    ipamd = Ipamd(config)
    try:
        servers = await ipamd.start()
        yield Running(ipamd, config.socket, servers[-1].port, workdir)
    finally:
        await ipamd.stop()  # also what a half-done start left running


@pytest.fixture
async def stub(running: Running) -> AsyncIterator[ipam_pb2_grpc.IPAMServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"unix:{running.socket}") as channel:
        yield ipam_pb2_grpc.IPAMServiceStub(channel)


def details(err: grpc.aio.AioRpcError) -> list[object]:
    status = status_of(err)
    assert status is not None
    out: list[object] = []
    for any_detail in status.details:
        for cls in (
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.ErrorInfo,
            error_details_pb2.ResourceInfo,
        ):
            if any_detail.Is(cls.DESCRIPTOR):
                msg = cls()
                any_detail.Unpack(msg)
                out.append(msg)
    return out


async def test_socket_is_private(running: Running) -> None:
    assert stat.S_IMODE(Path(running.socket).stat().st_mode) == 0o600


async def test_invalid_argument_names_every_bad_field(stub: ipam_pb2_grpc.IPAMServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Allocate(ipam_pb2.AllocateRequest(owner=ipam_pb2.Owner(namespace="Bad_NS"), ifname="x/y"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details(err.value)
    assert isinstance(bad, error_details_pb2.BadRequest)
    fields = {v.field for v in bad.field_violations}
    assert fields >= {"owner.namespace", "owner.pod_name", "container_id", "ifname", "node"}


async def test_a_trailing_newline_makes_no_name_id_or_interface(stub: ipam_pb2_grpc.IPAMServiceAsyncStub) -> None:
    # A pattern ending in `$` also matches before a final newline: every field is checked whole.
    owner = ipam_pb2.Owner(namespace="default\n", pod_name="web\n", pod_uid="u1\n")
    request = ipam_pb2.AllocateRequest(owner=owner, container_id="c1\n", ifname="eth0\n", node="n1\n", pool="p\n")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Allocate(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details(err.value)
    assert isinstance(bad, error_details_pb2.BadRequest)
    fields = {v.field for v in bad.field_violations}
    assert fields >= {"owner.namespace", "owner.pod_name", "owner.pod_uid", "container_id", "ifname", "node", "pool"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="tiny\n", cidr="10.7.0.0/30")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_pool_has_room_for_its_gateway(stub: ipam_pb2_grpc.IPAMServiceAsyncStub) -> None:
    # A /32 pool handed out its one address with the gateway x.x.x.(n+1), outside the subnet.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="one", cidr="10.7.1.5/32")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details(err.value)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["pool.cidr"]
    await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="two", cidr="10.7.1.6/31")))
    got = await stub.Allocate(allocate_request("a", pool_name="two"))
    assert got.allocation.address == "10.7.1.6/31" and got.allocation.gateway == "10.7.1.7"


async def test_exhausted_and_taken_and_missing(stub: ipam_pb2_grpc.IPAMServiceAsyncStub) -> None:
    await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="tiny", cidr="10.7.0.0/30")))
    got = await stub.Allocate(allocate_request("a"))  # a /30 has one host after the gateway
    assert got.allocation.address == "10.7.0.2/30"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Allocate(allocate_request("b"))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    (info,) = details(err.value)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "POOL_EXHAUSTED"

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Allocate(allocate_request("b", ip="10.7.0.2"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (failure,) = details(err.value)
    assert isinstance(failure, error_details_pb2.PreconditionFailure)
    assert failure.violations[0].type == "ADDRESS_IN_USE"

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DeletePool(ipam_pb2.DeletePoolRequest(name="tiny"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetAllocation(
            ipam_pb2.GetAllocationRequest(attachment=ipam_pb2.Attachment(container_id="nope", ifname="eth0"))
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LookupBinding(ipam_pb2.LookupBindingRequest(namespace="default", pod_name="nobody"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="tiny", cidr="10.7.0.0/30")))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreatePool(
            ipam_pb2.CreatePoolRequest(
                pool=ipam_pb2.Pool(name="x", cidr="10.7.0.1/24", provider=ipam_pb2.PoolProvider(name="nope"))
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details(err.value)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert {v.field for v in bad.field_violations} == {"pool.cidr", "pool.provider.name", "pool.provider.subnet_id"}


async def test_gc_with_valid_attachments(stub: ipam_pb2_grpc.IPAMServiceAsyncStub) -> None:
    await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="gc", cidr="10.6.0.0/24")))
    for pod in ("live", "dead"):
        await stub.Allocate(allocate_request(pod))
    resp = await stub.GarbageCollect(
        ipam_pb2.GarbageCollectRequest(
            node="node-1",
            valid_attachments=[ipam_pb2.Attachment(container_id="c-live", ifname="eth0")],
            min_age_seconds=0,
        )
    )
    assert [a.container_id for a in resp.collected] == ["c-dead"]
    # Unset min_age_seconds protects young allocations.
    assert not (await stub.GarbageCollect(ipam_pb2.GarbageCollectRequest(node="node-1"))).collected


async def test_tcp_needs_tls_and_a_token(running: Running) -> None:
    cert = (running.workdir / "server.crt").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=cert)
    async with grpc.aio.secure_channel(f"127.0.0.1:{running.tcp_port}", creds) as channel:
        stub = ipam_pb2_grpc.IPAMServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListPools(ipam_pb2.ListPoolsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        resp = await stub.ListPools(ipam_pb2.ListPoolsRequest(), metadata=(("authorization", "Bearer secret-token"),))
        assert list(resp.pools) == []


async def test_grpcurl_describes_the_contract(running: Running) -> None:
    proc = await asyncio.create_subprocess_exec(
        grpcurl(), "-plaintext", "-unix", running.socket, "describe", "tke.ipam.v1.IPAMService",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "rpc Allocate ( .tke.ipam.v1.AllocateRequest )" in out.decode()
    assert "Idempotent for the same" in out.decode()


async def test_unreachable_etcd_is_unavailable_not_internal(workdir: Path) -> None:
    from tests.support.ports import free_port

    config = IpamdConfig(
        socket=str(workdir / "down.sock"),
        storage=PluginConfig(
            plugin="etcd",
            options={"endpoints": [f"127.0.0.1:{free_port()}"], "request_timeout": 0.3, "retry_budget": 1.0},
        ),
    )
    ipamd = Ipamd(config)
    try:
        await ipamd.start()
        async with grpc.aio.insecure_channel(f"unix:{config.socket}") as channel:
            stub = ipam_pb2_grpc.IPAMServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Allocate(allocate_request("p"), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "Traceback" not in (err.value.details() or "")
    finally:
        await ipamd.stop()


async def test_update_pool_with_a_field_mask(stub: ipam_pb2_grpc.IPAMServiceAsyncStub) -> None:
    from google.protobuf import field_mask_pb2

    await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="upd", cidr="10.5.0.0/24")))
    got = await stub.UpdatePool(
        ipam_pb2.UpdatePoolRequest(
            pool=ipam_pb2.Pool(name="upd", node_names=["n9"], labels={"rack": "r1"}),
            update_mask=field_mask_pb2.FieldMask(paths=["node_names"]),
        )
    )
    assert list(got.node_names) == ["n9"] and not got.labels  # only the masked field changed
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdatePool(
            ipam_pb2.UpdatePoolRequest(
                pool=ipam_pb2.Pool(name="upd", vlan=7), update_mask=field_mask_pb2.FieldMask(paths=["vlan"])
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details(err.value)
    assert isinstance(bad, error_details_pb2.BadRequest) and bad.field_violations[0].field == "update_mask"


async def test_a_cluster_of_a_deleted_clusters_name_starts_with_none_of_its_addresses(
    workdir: Path, etcd_config: EtcdConfig
) -> None:
    """Rule: the platform names a cluster's IP storage after its tenant and name, which a deleted
    cluster leaves to the next cluster of that name; every ipamd of the new cluster (another uid)
    empties what the old one left (its pools, bindings, fixed and attached addresses) before it
    serves. Before, the new cluster's StatefulSet pod shop/db-0 got back the deleted cluster's
    db-0 address, and its pools and bindings, as if it were the same cluster."""

    def config(uid: str) -> IpamdConfig:
        options = {"endpoints": list(etcd_config.endpoints), "prefix": etcd_config.prefix + "/tke/clusters/t/prod"}
        if uid:
            options["cluster_uid"] = uid
        return IpamdConfig(socket=str(workdir / "ipamd.sock"), storage=PluginConfig(plugin="etcd", options=options))

    @contextlib.asynccontextmanager
    async def serving(uid: str) -> AsyncIterator[ipam_pb2_grpc.IPAMServiceAsyncStub]:
        ipamd = Ipamd(config(uid))
        try:
            await ipamd.start()
            async with grpc.aio.insecure_channel(f"unix:{workdir / 'ipamd.sock'}") as channel:
                yield ipam_pb2_grpc.IPAMServiceStub(channel)
        finally:
            await ipamd.stop()

    fixed = allocate_request("db-0", "c1", namespace="shop", kind="StatefulSet", workload="db")
    fixed.release_policy = ipam_pb2.RELEASE_POLICY_IMMUTABLE
    async with serving("uid-old") as old:
        await old.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net-a", cidr="10.0.1.0/24")))
        address = (await old.Allocate(fixed)).allocation.address
        await old.Release(ipam_pb2.ReleaseRequest(container_id="c1", ifname="eth0"))  # retained for db-0
    # The same cluster restarting its ipamds, and one from before the rule (no uid), keep it all.
    for uid in ("uid-old", ""):
        async with serving(uid) as same:
            assert [p.name for p in (await same.ListPools(ipam_pb2.ListPoolsRequest())).pools] == ["net-a"]
    fixed.container_id = "c2"
    async with serving("uid-old") as same:
        again = await same.Allocate(fixed)
        assert (again.allocation.address, again.reused) == (address, True)
        await same.Release(ipam_pb2.ReleaseRequest(container_id="c2", ifname="eth0"))

    # The old cluster is deleted; a new one of the same name and tenant starts its ipamds.
    async with serving("uid-new") as new:
        assert list((await new.ListPools(ipam_pb2.ListPoolsRequest())).pools) == []
        await new.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net-a", cidr="10.0.1.0/24")))
        fixed.container_id = "c3"
        got = await new.Allocate(fixed)
        assert not got.reused  # a new address for the new cluster's db-0, not the old one's
    async with serving("uid-new") as new:  # and its own addresses stay its own
        assert [p.name for p in (await new.ListPools(ipam_pb2.ListPoolsRequest())).pools] == ["net-a"]
