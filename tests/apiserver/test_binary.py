"""The tke-apiserver binary as an operator runs it: a TOML file, a clear refusal of a bad one,
and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from tests.support.etcd import EtcdProcess
from tests.support.ports import free_port
from tests.support.rpc import health_check

BINARY = shutil.which("tke-apiserver", path=str(Path(sys.executable).parent)) or "tke-apiserver"


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(BINARY, *args, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_bad_configurations_are_refused_with_the_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[listen]\naddres = "127.0.0.1:1"\n')
    code, err = await run("--config", str(bad))
    assert code == 2
    assert "unknown option listen.addres" in err
    bad.write_text('[watch]\nbookmark_interval = "soon"\n')
    code, err = await run("--config", str(bad))
    assert code == 2 and "watch.bookmark_interval: expected float" in err
    bad.write_text("[kubeconfig]\ndefault_validity = 90000\n")
    code, err = await run("--config", str(bad))
    assert code == 2 and "kubeconfig.default_validity must be between 60 and kubeconfig.max_validity" in err
    code, err = await run("--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "cannot read configuration" in err
    bad.write_text(
        'metrics_address = ""\n[listen]\naddress = "127.0.0.1:0"\n'
        '[[auth.authenticators]]\nplugin = "nope"\n[[auth.authorizers]]\nplugin = "policy"\n'
    )
    code, err = await run("--config", str(bad))
    assert code == 2 and "no tke.authn plugin named 'nope'" in err
    assert "Traceback" not in err
    for text in (err,):
        assert "Traceback" not in text


async def test_serves_then_stops_gracefully_on_sigterm(etcd: EtcdProcess, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "apiserver.toml"
    config.write_text(
        # No metrics endpoint: the default port is shared with whatever else runs on this machine.
        f'metrics_address = ""\n[listen]\naddress = "127.0.0.1:{port}"\n'
        f'[etcd]\nendpoints = ["{etcd.endpoint}"]\nprefix = "/bin-test"\n'
    )
    proc = await asyncio.create_subprocess_exec(BINARY, "--config", str(config), stderr=asyncio.subprocess.PIPE)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            resp = await health_check(channel)(health_pb2.HealthCheckRequest(), timeout=20, wait_for_ready=True)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert "AUTHENTICATION IS OFF" in log
        assert "shutting down" in log
        assert "Traceback" not in log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_busy_metrics_port_is_a_clean_refusal(etcd: EtcdProcess, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = tmp_path / "apiserver.toml"
        config.write_text(
            f'metrics_address = "127.0.0.1:{taken.getsockname()[1]}"\n[listen]\naddress = "127.0.0.1:0"\n'
            f'[etcd]\nendpoints = ["{etcd.endpoint}"]\nprefix = "/bin-test"\n'
        )
        code, err = await run("--config", str(config))
    assert code == 1
    assert "Address already in use" in err
    assert "Traceback" not in err and "Exception ignored" not in err
