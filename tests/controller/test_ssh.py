"""The SSH command channel against a real sshd: commands with environment and exit status,
a timeout that ends a hung command, atomic file writes with their mode, reads, bounded
connection retries, and authentication and host key failures that are permanent."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.support import processes
from tests.support.fake_ssh import FakeChannel
from tests.support.ports import free_port
from tests.support.sshd import LAB_ADDRESSES, MARKER, Machines, keypair, ssh_machines
from tests.support.waiting import wait_for
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.ssh import (
    CachingDialer,
    Channel,
    CommandFailed,
    SSHDialer,
    SSHOptions,
    Target,
    bounded,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machines]:
    with ssh_machines(tmp_path / "ssh", 1) as m:
        yield m


def dialer(m: Machines, **options: object) -> SSHDialer:
    creds = ConfiguredCredentials({"default/key": CredentialConfig(private_key_file=str(m.key.private_key_file))})
    return SSHDialer(creds, SSHOptions(known_hosts_file=str(m.known_hosts), **options), LAB_ADDRESSES)  # type: ignore[arg-type]


async def test_exec_write_read_and_timeouts(machine: Machines, tmp_path: Path) -> None:
    server = machine.servers[0]
    target = Target(server.host, server.port, "root", "key", "default")
    async with dialer(machine).connect(target) as ch:
        result = await ch.exec('echo "$GREETING $0"; echo oops >&2; exit 3', env={"GREETING": "it's me"})
        assert (result.exit_status, result.stdout.split()[:2], result.stderr) == (3, ["it's", "me"], "oops\n")
        with pytest.raises(CommandFailed, match="exited with 3: oops"):
            await ch.run("echo oops >&2; exit 3")
        started = time.monotonic()
        with pytest.raises(TemporaryError, match="timed out"):
            await ch.exec("sleep 30", time_limit=0.5)
        assert time.monotonic() - started < 20  # ended by the limit, not by the command's 30 s
        path = str(tmp_path / "deep/dir/secret.key")
        await ch.write_file(path, b"top secret\n", 0o600)
        assert Path(path).read_bytes() == b"top secret\n"
        assert Path(path).stat().st_mode & 0o777 == 0o600
        await ch.write_file(path, b"replaced\n", 0o644)
        assert await ch.read_file(path) == b"replaced\n"
        assert sorted(p.name for p in Path(path).parent.iterdir()) == ["secret.key"]  # no temporary left
        assert await ch.exists(path) and not await ch.exists(path + ".nope")
        local = tmp_path / "bundle.tar"
        local.write_bytes(b"\x00binary\xff" * 1000)
        await ch.copy_file(str(local), str(tmp_path / "remote/bundle.tar"), 0o755)
        assert (tmp_path / "remote/bundle.tar").read_bytes() == local.read_bytes()
        assert (tmp_path / "remote/bundle.tar").stat().st_mode & 0o777 == 0o755
        with pytest.raises(PermanentError, match="cannot read"):
            await ch.copy_file(str(tmp_path / "missing"), str(tmp_path / "x"))
        with pytest.raises(FileNotFoundError):
            await ch.read_file(path + ".nope")


async def test_a_command_reads_no_input_and_one_past_its_limit_is_killed(machine: Machines, tmp_path: Path) -> None:
    server = machine.servers[0]
    async with dialer(machine).connect(Target(server.host, server.port, "root", "key", "default")) as ch:
        # stdin is at end of file: a command that reads it finishes (with an open stdin this
        # one would wait out its limit and fail "timed out").
        assert await ch.run("cat; read -r answer || echo no-answer", time_limit=30) == "no-answer\n"
        # A pipeline still running at its limit is killed, every process of it, not left on
        # the machine behind the step's next attempt.
        pids = tmp_path / "pids"
        command = f"echo $$ > {pids}; (sleep 300 | cat) & echo $! >> {pids}; wait"
        with pytest.raises(TemporaryError, match="timed out after 1s"):
            await ch.exec(command, time_limit=1)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2

    async def all_gone() -> bool:
        return not any(processes.running(pid) for pid in started)

    await wait_for(all_gone, within=20)


@pytest.mark.parametrize("limit", [0.5, 600, 1e7])
def test_every_time_limit_is_one_coreutils_timeout_takes(limit: float) -> None:
    done = subprocess.run(["bash", "-c", bounded("echo ok", limit)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


async def test_stopped_machines_leave_no_process_of_their_sessions_behind(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    with ssh_machines(tmp_path / "ssh", 1) as machine:
        server = machine.servers[0]
        target = Target(server.host, server.port, "root", "key", "default")
        # One that left its session and process group, and outlives its connection...
        async with dialer(machine).connect(target) as ch:
            await ch.run(f"setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! >> {pids}")
        # ... and a command still running when the machines stop (a test that failed or
        # timed out in the middle of a step).
        async with dialer(machine).connect(target) as ch:
            running = asyncio.create_task(ch.exec(f"echo $$ >> {pids}; sleep 300 | cat", time_limit=600))
            await wait_for(lambda: asyncio.sleep(0, len(pids.read_text().split()) == 2))
            started = [int(p) for p in pids.read_text().split()]
            assert all(processes.running(pid) for pid in started)
            server.stop()
            assert not any(processes.running(pid) for pid in started)
            assert not processes.carrying(MARKER, server.marker)
            with contextlib.suppress(TemporaryError):  # the connection may go first
                assert (await running).exit_status != 0


async def test_connection_failures_are_bounded_and_auth_failures_permanent(
    machine: Machines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = machine.servers[0]
    started = time.monotonic()
    closed = Target(server.host, free_port(server.host), "root", "key", "default")
    with pytest.raises(TemporaryError, match="cannot connect after 2 attempts"):
        async with dialer(machine, connect_attempts=2, connect_timeout=2).connect(closed):
            pass
    assert time.monotonic() - started < 20  # two refused attempts and one backoff; no hang

    other_key, _ = keypair(tmp_path, "stranger")
    creds = ConfiguredCredentials({"default/key": CredentialConfig(private_key_file=str(other_key))})
    stranger = SSHDialer(creds, SSHOptions(known_hosts_file=str(machine.known_hosts)), LAB_ADDRESSES)
    with pytest.raises(PermanentError, match="authentication failed"):
        async with stranger.connect(Target(server.host, server.port, "root", "key", "default")):
            pass
    with pytest.raises(PermanentError, match="tenant 'default' has no credential 'missing'"):
        async with stranger.connect(Target(server.host, server.port, "root", "missing", "default")):
            pass
    with pytest.raises(PermanentError, match="tenant 'other' has no credential 'key'"):  # never default's
        async with dialer(machine).connect(Target(server.host, server.port, "root", "key", "other")):
            pass
    # No known_hosts file trusts nobody, whatever the controller user's ~/.ssh/known_hosts says.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(machine.known_hosts, home / ".ssh" / "known_hosts")
    monkeypatch.setenv("HOME", str(home))
    nobody_trusted = dialer(machine)
    nobody_trusted.options = SSHOptions(known_hosts_file="")
    with pytest.raises(PermanentError, match="host key"):
        async with nobody_trusted.connect(Target(server.host, server.port, "root", "key", "default")):
            pass
    unchecked = dialer(machine)
    unchecked.options = SSHOptions(host_key_checking=False)
    async with unchecked.connect(Target(server.host, server.port, "root", "key", "default")) as ch:
        assert (await ch.run("echo ok")).strip() == "ok"


async def test_a_reconcile_reuses_one_connection_per_machine_and_drops_a_broken_one() -> None:
    opened: list[str] = []
    closed: list[str] = []

    class CountingDialer:
        @contextlib.asynccontextmanager
        async def connect(self, target: Target) -> AsyncIterator[Channel]:
            opened.append(target.host)
            try:
                yield FakeChannel(target)
            finally:
                closed.append(target.host)

    dialer = CachingDialer(CountingDialer(), "default")
    a, b = Target("192.0.2.1"), Target("192.0.2.2")
    for _ in range(3):
        async with dialer.connect(a) as ch:
            await ch.run("true")
    async with dialer.connect(b):
        pass
    assert opened == ["192.0.2.1", "192.0.2.2"] and closed == []
    with pytest.raises(TemporaryError):
        async with dialer.connect(a):
            raise TemporaryError("the connection broke")
    assert closed == ["192.0.2.1"]
    async with dialer.connect(a):
        pass
    assert opened == ["192.0.2.1", "192.0.2.2", "192.0.2.1"]
    await dialer.aclose()
    assert sorted(closed) == ["192.0.2.1", "192.0.2.1", "192.0.2.2"]


async def test_password_credentials_log_in_and_a_wrong_password_is_permanent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Debian's sshd would need a system account with a password; an asyncssh server in the
    # test checks the client's password path for real without touching the system's users.
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    class PasswordOnly(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username == "ops" and password == "s3cret"

    def session(process: asyncssh.SSHServerProcess[str]) -> None:
        process.stdout.write(f"ran: {process.command}\n")
        process.exit(0)

    server = await asyncssh.create_server(
        PasswordOnly, "127.0.0.1", 0, server_host_keys=[host_key], process_factory=session
    )
    port = server.sockets[0].getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    monkeypatch.setenv("TKE_TEST_SSH_PASSWORD", "s3cret")
    monkeypatch.setenv("TKE_TEST_SSH_WRONG", "guess")
    creds = ConfiguredCredentials(
        {
            "default/pw": CredentialConfig(password_env="TKE_TEST_SSH_PASSWORD"),
            "default/wrong": CredentialConfig(password_env="TKE_TEST_SSH_WRONG"),
            "default/unset": CredentialConfig(password_env="TKE_TEST_SSH_NOT_SET"),
        }
    )
    dialer = SSHDialer(creds, SSHOptions(known_hosts_file=str(known)), LAB_ADDRESSES)
    try:
        async with dialer.connect(Target("127.0.0.1", port, "ops", "pw", "default")) as ch:
            assert (await ch.run("uname -r")).strip().endswith("-c 'uname -r'")
        with pytest.raises(PermanentError, match="authentication failed"):
            async with dialer.connect(Target("127.0.0.1", port, "ops", "wrong", "default")):
                pass
        with pytest.raises(PermanentError, match="TKE_TEST_SSH_NOT_SET is not set"):
            async with dialer.connect(Target("127.0.0.1", port, "ops", "unset", "default")):
                pass
    finally:
        server.close()
        await server.wait_closed()
