"""The demo's pieces that need no machines: reading the sessions logs its sshd's ForceCommand
writes into `MACHINE (ROLE) $ COMMAND` lines, and the haproxy stand-in reading the platform's
haproxy.cfg and skipping a server that refuses."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

from tests.support import standin_haproxy
from tests.support.demo import sessions
from tests.support.ports import free_port
from tke.internal.provider import ssh
from tke.internal.provider.kube import vip


def record(kind: str, when: float, pid: int, rest: str) -> bytes:
    return f"{kind}\t{when}\t{pid}\t{rest}".encode() + b"\0"


def test_a_line_shows_the_command_inside_the_platforms_wrapper_without_its_environment(tmp_path: Path) -> None:
    root = "/tmp/demo/world/machines/10.200.0.11"
    init = ssh.with_env(ssh.bounded(f"kubeadm init --config {root}/etc/kubernetes/kubeadm-init.yaml", 600), {
        "TKE_BOOTSTRAP_TOKEN": "abcdef.0123456789abcdef", "TKE_ROOT": root,
    })  # fmt: skip
    token = ssh.with_env(ssh.bounded('kubeadm token create "$TKE_BOOTSTRAP_TOKEN" --ttl 1800s', 120), {})
    log = tmp_path / "sessions.log"
    log.write_bytes(
        record("start", 10.5, 7, init)
        + record("start", 11.0, 8, token)
        + record("end", 11.2, 8, "1")
        + record("end", 12.0, 7, "0")
        + record("start", 13.0, 7, "uname -srm")  # a pid used again
    )
    ran = sessions.read(log, "master-1", "control-plane")
    assert [(r.started, r.status) for r in ran] == [(10.5, 0), (11.0, 1), (13.0, None)]
    lines = [r.line(root, width=26) for r in ran]
    assert lines == [
        "master-1 (control-plane)   $ kubeadm init --config /etc/kubernetes/kubeadm-init.yaml",
        'master-1 (control-plane)   $ kubeadm token create "$TKE_BOOTSTRAP_TOKEN" --ttl 1800s   # exit status 1',
        "master-1 (control-plane)   $ uname -srm   # exit status ?",
    ]
    assert not any("0123456789abcdef" in line for line in lines)
    assert sessions.read(tmp_path / "missing.log", "worker-1", "worker") == []
    other = [sessions.Ran(10.7, "worker-1", "worker", "hostname", 0)]
    assert [r.machine for r in sessions.merged([ran, other])] == ["master-1", "worker-1", "master-1", "master-1"]


def test_a_command_that_is_not_wrapped_shows_as_sent() -> None:
    for command in ("uname -srm", "echo 'unbalanced", shlex.join(["timeout", "5", "sleep", "1"])):
        assert sessions.unwrap(command) == command


async def test_the_haproxy_stand_in_forwards_to_the_servers_that_answer(tmp_path: Path) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"from the answering server: " + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    answering = server.sockets[0].getsockname()[1]
    refusing = free_port()
    config = vip.VIPConfig(
        address="10.200.0.100", port=free_port(), interface="eth0", router_id=51, auth_pass="x" * 8,
        backends=[("master-1", "127.0.0.1"), ("master-2", "127.0.0.1")],
    )  # fmt: skip
    text = vip.haproxy_cfg(config).replace(":6443", f":{answering}", 1).replace(":6443", f":{refusing}", 1)
    port, servers = standin_haproxy.parse(text)
    assert (port, servers) == (config.port, [("127.0.0.1", answering), ("127.0.0.1", refusing)])
    balancer = standin_haproxy.Balancer(servers)
    front = await asyncio.start_server(balancer.handle, "127.0.0.1", 0)
    try:
        for _ in range(3):  # round robin: every other connection starts at the refusing server
            reader, writer = await asyncio.open_connection("127.0.0.1", front.sockets[0].getsockname()[1])
            writer.write(b"hello\n")
            assert await asyncio.wait_for(reader.read(), 10) == b"from the answering server: hello\n"
            writer.close()
    finally:
        front.close()
        server.close()
