"""tke-ipamc over every way of reaching tke-ipamd: the unix socket through the small HTTP/2
client (the default), the same socket through grpc when the small client gives up, plaintext
TCP on loopback and TCP with TLS (both through grpc), and a non-local address without TLS."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.cni import DEBIAN_CNI, IpamdDaemon, Runtime, console_script, unique, with_prev
from tests.support.ports import free_port
from tests.support.tools import tool
from tke.internal.cni import h2
from tke.internal.cni.endpoint import IpamdEndpoint
from tke.internal.cni.errors import CNIError
from tke.internal.cni.ipamdclient import IpamdClient
from tke.internal.cni.owner import PodOwner
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc


def make_certs(folder: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 and ipamd.test (Debian's openssl)."""
    openssl = tool("openssl", "openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=tke-test-ca", "-days", "1")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=ipamd")
    (folder / "san.ext").write_text("subjectAltName=DNS:ipamd.test,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    run("req", "-x509", *ec, "-keyout", "other.key", "-out", "other-ca.crt", "-subj", "/CN=other", "-days", "1")
    return {name: str(folder / name) for name in ("ca.crt", "server.crt", "server.key", "other-ca.crt")}


@pytest.fixture
def daemon(etcd_config: EtcdConfig) -> Iterator[tuple[IpamdDaemon, str, dict[str, str]]]:
    """An ipamd on a unix socket and on TLS TCP; a second one on plaintext loopback TCP shares
    its etcd prefix."""
    workdir = Path(tempfile.mkdtemp(prefix="cni-ipamd-", dir="/tmp"))
    certs = make_certs(workdir)
    tls = IpamdDaemon(
        workdir,
        endpoints=list(etcd_config.endpoints),
        prefix=etcd_config.prefix,
        tcp=f"127.0.0.1:{free_port()}",
        cert_file=certs["server.crt"],
        key_file=certs["server.key"],
    )
    plain_dir = workdir / "plain"
    plain_dir.mkdir()
    plain_address = f"127.0.0.1:{free_port()}"
    plain = IpamdDaemon(plain_dir, endpoints=list(etcd_config.endpoints), prefix=etcd_config.prefix, tcp=plain_address)
    try:
        tls.start()
        plain.start()
        with grpc.insecure_channel(f"unix:{tls.socket}") as channel:
            ipam_pb2_grpc.IPAMServiceStub(channel).CreatePool(
                ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.86.0.0/24")), timeout=10
            )
        yield tls, plain_address, certs
    finally:
        plain.stop()
        tls.stop()
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


@pytest.fixture
def ipamc(tmp_path: Path) -> Runtime:
    return Runtime(binary=console_script("tke-ipamc"), node="", path=[DEBIAN_CNI])


def test_tls_and_plain_tcp(daemon: tuple[IpamdDaemon, str, dict[str, str]], ipamc: Runtime, tmp_path: Path) -> None:
    tls, plain, certs = daemon
    tls_address = tls.config.read_text().split('address = "')[1].split('"')[0]
    secure = {"address": tls_address, "tls": {"caFile": certs["ca.crt"], "serverName": "ipamd.test"}}
    assert add_check_del(ipamc, ipam_conf(secure, tmp_path)).startswith("10.86.0.")
    assert add_check_del(ipamc, ipam_conf({"address": plain}, tmp_path)).startswith("10.86.0.")
    # TLS with another CA: the server cannot be trusted, which is "try again later" to CNI.
    wrong = {"address": tls_address, "tls": {"caFile": certs["other-ca.crt"]}, "timeout": 1}
    out = ipamc.run("ADD", ipam_conf(wrong, tmp_path), container_id=unique("c"), netns="/proc/self/ns/net")
    assert out.json["code"] == 11
    # A non-local address without TLS is refused before anything is sent.
    out = ipamc.run("ADD", ipam_conf({"address": "192.0.2.1:9"}, tmp_path), container_id="c", netns="/x")
    assert out.json["code"] == 7 and "tls.caFile" in out.json["msg"]


def test_small_client_falls_back_to_grpc(
    daemon: tuple[IpamdDaemon, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, _, _ = daemon

    def unsupported(*args: object) -> tuple[int, str, bytes]:
        raise h2.ProtocolUnsupported("Huffman-coded grpc-status")

    client = IpamdClient(IpamdEndpoint(address=tls.socket))
    assert client.serving()
    assert client.lookup_binding(PodOwner("ns", "nobody-0")) is None
    monkeypatch.setattr(h2, "unary", unsupported)
    try:
        assert client.serving()
        assert client.lookup_binding(PodOwner("ns", "nobody-0")) is None
        assert client._channel is not None  # the grpc channel did the work
    finally:
        client.close()


def test_unix_socket_forms(daemon: tuple[IpamdDaemon, str, dict[str, str]]) -> None:
    tls, _, _ = daemon
    for address in (tls.socket, f"unix:{tls.socket}", f"unix://{tls.socket}"):
        with IpamdClient(IpamdEndpoint(address=address)) as client:
            assert client.serving()
    with pytest.raises(CNIError):
        IpamdEndpoint.from_json({"address": tls.socket, "colour": "blue"}, "ipamd")


def test_a_hung_ipamd_is_try_again_later_within_the_timeout(
    daemon: tuple[IpamdDaemon, str, dict[str, str]], ipamc: Runtime, tmp_path: Path
) -> None:
    import signal
    import time

    tls, _, _ = daemon
    assert tls.process is not None
    tls.process.send_signal(signal.SIGSTOP)
    try:
        conf = ipam_conf({"address": tls.socket, "timeout": 1}, tmp_path)
        start = time.monotonic()
        out = ipamc.run("ADD", conf, container_id=unique("c"), netns="/proc/self/ns/net", args="K8S_POD_NAME=p")
        assert out.json["code"] == 11 and "deadline" in out.json["details"]
        assert time.monotonic() - start < 20  # the 1 s deadline and a process start on a busy machine, no hang
    finally:
        tls.process.send_signal(signal.SIGCONT)
