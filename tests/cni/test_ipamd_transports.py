"""tke-ipamc over every way of reaching a real tke-ipamd, all through the small HTTP/2 client:
the unix socket (the default), plaintext TCP on loopback, TLS, and mutual TLS; and the
failures an operator must be able to tell apart: an untrusted server, a client certificate
the server requires or refuses, a non-local address without TLS, a hung daemon."""

from __future__ import annotations

import base64
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.support.cni import DEBIAN_CNI, IpamdDaemon, Runtime, console_script, unique, with_prev
from tests.support.pki import CertFiles, TestCA
from tests.support.ports import free_port
from tke.internal.cni import h2
from tke.internal.cni.endpoint import IpamdEndpoint
from tke.internal.cni.errors import CNIError
from tke.internal.cni.ipamdclient import IpamdClient, IpamdUnreachable
from tke.internal.cni.owner import PodOwner
from tke.internal.cni.transport import dial_unix
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc


class Daemons:
    """Three real ipamds over one etcd prefix: unix socket + TLS TCP, mutual TLS TCP, plaintext
    loopback TCP; a CA that signed the servers and a client, and another CA that did not."""

    def __init__(self, workdir: Path, etcd_config: EtcdConfig) -> None:
        self.ca = TestCA(workdir / "pki")
        self.other_ca = TestCA(workdir / "other-pki", "other-ca")
        self.server = self.ca.issue("server", common_name="ipamd", hosts=("127.0.0.1", "ipamd.test"))
        self.client = self.ca.issue("client", common_name="node-1", client=True)
        self.stranger = self.other_ca.issue("stranger", common_name="node-1", client=True)
        self.tls_address = f"127.0.0.1:{free_port()}"
        self.mtls_address = f"127.0.0.1:{free_port()}"
        self.plain_address = f"127.0.0.1:{free_port()}"
        common: dict[str, Any] = {"endpoints": list(etcd_config.endpoints), "prefix": etcd_config.prefix}
        server_files: dict[str, Any] = {"cert_file": self.server.cert_file, "key_file": self.server.key_file}
        self.daemons = []
        for name, options in (
            ("tls", {"tcp": self.tls_address, **server_files}),
            ("mtls", {"tcp": self.mtls_address, "client_ca_file": self.ca.ca_file, **server_files}),
            ("plain", {"tcp": self.plain_address}),
        ):
            (workdir / name).mkdir()
            self.daemons.append(IpamdDaemon(workdir / name, **common, **options))
        self.tls = self.daemons[0]

    def tls_endpoint(self, **tls: str) -> dict[str, Any]:
        return {"address": self.tls_address, "tls": {"caFile": self.ca.ca_file, **tls}}

    def mtls_endpoint(self, client: CertFiles | None) -> dict[str, Any]:
        files = {"certFile": client.cert_file, "keyFile": client.key_file} if client else {}
        return {"address": self.mtls_address, "tls": {"caFile": self.ca.ca_file, **files}}


@pytest.fixture
def daemons(etcd_config: EtcdConfig) -> Iterator[Daemons]:
    workdir = Path(tempfile.mkdtemp(prefix="cni-ipamd-", dir="/tmp"))
    found = Daemons(workdir, etcd_config)
    try:
        for daemon in found.daemons:
            daemon.start()
        with grpc.insecure_channel(f"unix:{found.tls.socket}") as channel:
            ipam_pb2_grpc.IPAMServiceStub(channel).CreatePool(
                ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.86.0.0/24")), timeout=10
            )
        yield found
    finally:
        for daemon in found.daemons:
            daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def ipam_conf(ipamd: Any, tmp_path: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": "net",
        "type": "bridge",
        "ipam": {"type": "tke-ipamc", "ipamd": ipamd, "pool": "net", "node": "n1", "stateDir": str(tmp_path / "s")},
    }


def add_check_del(ipamc: Runtime, conf: dict[str, Any]) -> str:
    cid = unique("c")
    result = ipamc.run("ADD", conf, container_id=cid, netns="/proc/self/ns/net", args="K8S_POD_NAME=p").ok()
    assert ipamc.run("CHECK", with_prev(conf, result), container_id=cid, netns="/proc/self/ns/net").code == 0
    assert ipamc.run("DEL", conf, container_id=cid, args="K8S_POD_NAME=p").code == 0
    address: str = result["ips"][0]["address"]
    return address


def failed_add(ipamc: Runtime, conf: dict[str, Any]) -> dict[str, Any]:
    out = ipamc.run("ADD", conf, container_id=unique("c"), netns="/proc/self/ns/net", args="K8S_POD_NAME=p")
    assert out.code != 0 and out.json is not None, out
    found: dict[str, Any] = out.json
    return found


@pytest.fixture
def ipamc() -> Runtime:
    return Runtime(binary=console_script("tke-ipamc"), node="", path=[DEBIAN_CNI])


def test_every_transport_serves_add_check_del(daemons: Daemons, ipamc: Runtime, tmp_path: Path) -> None:
    for ipamd in (
        daemons.tls.socket,
        {"address": daemons.plain_address},
        daemons.tls_endpoint(),  # the certificate's IP address
        daemons.tls_endpoint(serverName="ipamd.test"),  # its DNS name
        daemons.mtls_endpoint(daemons.client),
    ):
        assert add_check_del(ipamc, ipam_conf(ipamd, tmp_path)).startswith("10.86.0."), ipamd


def test_an_untrusted_server_is_try_again_later_and_says_why(daemons: Daemons, ipamc: Runtime, tmp_path: Path) -> None:
    wrong_ca = {"address": daemons.tls_address, "tls": {"caFile": daemons.other_ca.ca_file}}
    error = failed_add(ipamc, ipam_conf(wrong_ca, tmp_path))
    assert error["code"] == 11
    assert "certificate is not trusted" in error["details"] and daemons.other_ca.ca_file in error["details"]
    assert "unable to get local issuer certificate" in error["details"]
    wrong_name = daemons.tls_endpoint(serverName="elsewhere.test")
    error = failed_add(ipamc, ipam_conf(wrong_name, tmp_path))
    assert error["code"] == 11 and "Hostname mismatch" in error["details"], error


def test_mutual_tls_without_or_with_a_foreign_client_certificate(
    daemons: Daemons, ipamc: Runtime, tmp_path: Path
) -> None:
    error = failed_add(ipamc, ipam_conf(daemons.mtls_endpoint(None), tmp_path))
    assert error["code"] == 11
    assert "requires a client certificate" in error["details"] and "tls.certFile" in error["details"], error
    error = failed_add(ipamc, ipam_conf(daemons.mtls_endpoint(daemons.stranger), tmp_path))
    assert error["code"] == 11
    assert f"does not accept the client certificate {daemons.stranger.cert_file}" in error["details"], error


def test_configurations_that_cannot_work_are_code_7(daemons: Daemons, ipamc: Runtime, tmp_path: Path) -> None:
    for ipamd, words in (
        ({"address": "192.0.2.1:9"}, "tls.caFile"),  # not local, no TLS: refused before anything is sent
        ({"address": daemons.plain_address, "tls": {"certFile": daemons.client.cert_file}}, "caFile"),
        ({"address": daemons.tls_address, "tls": {"caFile": str(tmp_path / "missing.crt")}}, "missing.crt"),
        ({"address": daemons.tls_address, "tls": {"caFile": daemons.server.key_file}}, "NO_CERTIFICATE"),
        (daemons.mtls_endpoint(CertFiles(daemons.client.cert_file, daemons.stranger.key_file)), "MISMATCH"),
        ({"address": "127.0.0.1"}, "host:port"),
    ):
        error = failed_add(ipamc, ipam_conf(ipamd, tmp_path))
        assert error["code"] == 7 and words in f"{error['msg']} {error.get('details', '')}", (ipamd, error)


def test_a_request_larger_than_the_servers_windows(daemons: Daemons) -> None:
    """GC of a busy node: a request of ~400 kB, several times the server's first flow-control
    window and far above its maximum frame size, over the unix socket and over TLS."""
    valid = [(f"container-{i:060d}", "eth0") for i in range(5000)]
    for address in (daemons.tls.socket, daemons.tls_address):
        ca_file = daemons.ca.ca_file if address == daemons.tls_address else ""
        client = IpamdClient(IpamdEndpoint(address=address, ca_file=ca_file, timeout=10))
        assert client.garbage_collect("n1", valid) == []


def test_huffman_coded_trailers_of_the_real_server_decode(daemons: Daemons) -> None:
    """grpc Huffman-codes grpc-status-details-bin: the small client decodes it to the bytes
    grpc's own client reports, a google.rpc.Status with ipamd's BadRequest."""
    request = ipam_pb2.AllocateRequest(container_id="c1", ifname="eth0", node="n1").SerializeToString()
    method = "/tke.ipam.v1.IPAMService/Allocate"
    stream = dial_unix(daemons.tls.socket, time.monotonic() + 10)
    try:
        reply = h2.unary(stream, method, request, time.monotonic() + 10, authority="localhost")
    finally:
        stream.close()
    with grpc.insecure_channel(f"unix:{daemons.tls.socket}") as channel, pytest.raises(grpc.RpcError) as caught:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        call(request, timeout=10)
    err: Any = caught.value
    expected = dict(err.trailing_metadata())["grpc-status-details-bin"]
    assert reply.code == err.code().value[0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert reply.message == err.details()
    details = reply.metadata["grpc-status-details-bin"]
    assert base64.b64decode(details + "=" * (-len(details) % 4)) == expected
    status = status_pb2.Status.FromString(expected)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request) and bad_request.field_violations


def test_unix_socket_forms(daemons: Daemons) -> None:
    socket = daemons.tls.socket
    for address in (socket, f"unix:{socket}", f"unix://{socket}"):
        with IpamdClient(IpamdEndpoint(address=address)) as client:
            assert client.serving()
            assert client.lookup_binding(PodOwner("ns", "nobody-0")) is None
    with pytest.raises(CNIError):
        IpamdEndpoint.from_json({"address": socket, "colour": "blue"}, "ipamd")


@pytest.mark.parametrize("transport", ["unix", "tls"])
def test_a_hung_ipamd_is_try_again_later_within_the_timeout(
    daemons: Daemons, ipamc: Runtime, tmp_path: Path, transport: str
) -> None:
    """Stopped after accepting connections: the TLS handshake or the answer never comes."""
    ipamd = {"address": daemons.tls.socket} if transport == "unix" else daemons.tls_endpoint()
    conf = ipam_conf({**ipamd, "timeout": 1}, tmp_path)
    assert daemons.tls.process is not None
    daemons.tls.process.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        error = failed_add(ipamc, conf)
        assert error["code"] == 11 and "deadline" in error["details"], error
        assert time.monotonic() - start < 20  # the 1 s deadline and a process start on a busy machine, no hang
    finally:
        daemons.tls.process.send_signal(signal.SIGCONT)


def listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) == 0


def test_tls_alerts_of_a_server_that_sends_them(tmp_path: Path) -> None:
    """grpc closes the connection silently; OpenSSL's own server (Debian's openssl s_server,
    requiring a client certificate) says why in an alert, and the client passes that on."""
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", common_name="ipamd", hosts=("127.0.0.1",))
    stranger = TestCA(tmp_path / "other-pki", "other-ca").issue("stranger", common_name="node-1", client=True)
    address = f"127.0.0.1:{free_port()}"
    argv = ["openssl", "s_server", "-quiet", "-accept", address, "-cert", server.cert_file, "-key", server.key_file,
            "-CAfile", ca.ca_file, "-Verify", "1", "-verify_return_error", "-alpn", "h2"]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not listening(address):
            assert process.poll() is None and time.monotonic() < deadline, "openssl s_server did not start"
            time.sleep(0.05)
        without = IpamdClient(IpamdEndpoint(address=address, ca_file=ca.ca_file))
        with pytest.raises(
            IpamdUnreachable, match=r"requires a client certificate \(TLSV13_ALERT_CERTIFICATE_REQUIRED\)"
        ):
            without.serving()
        foreign = IpamdClient(
            IpamdEndpoint(address=address, ca_file=ca.ca_file, cert_file=stranger.cert_file, key_file=stranger.key_file)
        )
        with pytest.raises(
            IpamdUnreachable, match=f"rejected the client certificate {stranger.cert_file} .*UNKNOWN_CA"
        ):
            foreign.serving()
    finally:
        process.kill()
        process.wait()
