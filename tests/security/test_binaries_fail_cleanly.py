"""Security model: no component ever exits with a traceback. Each long-running binary is started
the ways a careless operator starts it (a certificate file missing, a socket path that is a
file, a socket mode open to everyone, a port taken, etcd not answering, Ctrl-C while it still
starts) and must end with a one-line message and an exit code, never Python's traceback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import wait_until

BIN = Path(sys.executable).parent


def run(binary: str, config: Path, text: str, timeout: float = 60) -> tuple[int, str]:
    config.write_text(text)
    done = subprocess.run(
        [str(BIN / binary), "--config", str(config)], capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.returncode, done.stdout + done.stderr


def clean(output: str) -> None:
    assert "Traceback" not in output, output
    assert 'File "' not in output, output


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: an etcd that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_the_controller_with_a_missing_ca_file(tmp_path: Path) -> None:
    code, out = run(
        "tke-controller",
        tmp_path / "c.toml",
        'metrics_address = ""\n[apiserver]\naddress = "127.0.0.1:1"\nca_file = "/nonexistent/ca.crt"\n',
    )
    clean(out)
    assert code == 1 and "cannot run: FileNotFoundError" in out and "/nonexistent/ca.crt" in out


def test_the_apiserver_with_a_file_where_its_socket_goes(tmp_path: Path, etcd_endpoint: str) -> None:
    (tmp_path / "not-a-socket").write_text("hello")
    code, out = run(
        "tke-apiserver",
        tmp_path / "a.toml",
        f'metrics_address = ""\n[listen]\naddress = "127.0.0.1:0"\nunix_socket = "{tmp_path}/not-a-socket"\n'
        f'[etcd]\nendpoints = ["{etcd_endpoint}"]\nprefix = "/fail-cleanly"\n',
    )
    clean(out)
    assert code == 1 and "exists and is not a socket" in out
    assert (tmp_path / "not-a-socket").read_text() == "hello"


@pytest.mark.parametrize("binary", ["tke-apiserver", "tke-ipamd"])
def test_a_socket_mode_open_to_everyone_is_a_configuration_error(tmp_path: Path, binary: str) -> None:
    text = (
        '[listen]\nunix_socket = "/tmp/x.sock"\nunix_socket_mode = 0o666\n'
        if binary == "tke-apiserver"
        else 'socket = "/tmp/x.sock"\nsocket_mode = 0o666\n'
    )
    code, out = run(binary, tmp_path / "c.toml", text)
    clean(out)
    assert code == 2 and "gives others access" in out


def test_the_apiserver_with_its_port_taken(tmp_path: Path, etcd_endpoint: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out = run(
            "tke-apiserver",
            tmp_path / "a.toml",
            f'metrics_address = ""\n[listen]\naddress = "127.0.0.1:{port}"\n'
            f'[etcd]\nendpoints = ["{etcd_endpoint}"]\nprefix = "/fail-cleanly"\n',
        )
    clean(out)
    assert code == 1


def test_the_apiserver_with_an_etcd_that_never_answers(tmp_path: Path, silent_port: int) -> None:
    code, out = run(
        "tke-apiserver",
        tmp_path / "a.toml",
        f'metrics_address = ""\n[listen]\naddress = "127.0.0.1:0"\n'
        f'[etcd]\nendpoints = ["127.0.0.1:{silent_port}"]\nrequest_timeout = 1.0\nretry_budget = 2.0\n',
    )
    clean(out)
    assert code == 1 and "cannot start" in out


def test_ctrl_c_while_starting(tmp_path: Path, silent_port: int) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        f'metrics_address = ""\n[listen]\naddress = "127.0.0.1:0"\n'
        f'[etcd]\nendpoints = ["127.0.0.1:{silent_port}"]\nretry_budget = 120.0\n'
    )
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "tke-apiserver"), "--config", str(config)], stdout=out, stderr=out, start_new_session=True
        )
    try:
        # It has read its configuration and waits for etcd.
        wait_until(lambda: "AUTHENTICATION IS OFF" in log.read_text(), what="the apiserver starting")
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    clean(log.read_text())
    assert code == 130, code  # as a shell reports a process ended by Ctrl-C


@pytest.fixture
def etcd_endpoint(etcd: object) -> str:
    return str(etcd.endpoint)  # type: ignore[attr-defined]
