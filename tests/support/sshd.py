"""Real SSH servers for tests: Debian's openssh-server on a loopback address and a free port,
with a throwaway host key, an AuthorizedKeysFile holding the test's user key, and its own
config, pid file and log in a directory of the test's. Each server can listen on its own
127.0.0.x address, so tests see several "machines" (all sharing this host's file system).

openssh-server is installed with apt-get (--no-install-recommends) when /usr/sbin/sshd is
missing. sshd runs as root (it needs to, to switch users); logins are as root with the key.
Stopping a server ends every process its sessions started, even those that outlived their
connection or left their session (SSHServer.stop).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support import LOOPBACK_NETWORKS, processes
from tests.support.ports import free_port
from tke.internal.provider.addresses import AddressConfig, AddressPolicy

# The address policy of a dialer that reaches these machines: they listen on loopback, which
# tke-controller refuses by default (tke.internal.provider.addresses).
LAB_ADDRESSES = AddressPolicy(AddressConfig(allowed_networks=LOOPBACK_NETWORKS))

SSHD = "/usr/sbin/sshd"
# Set in the environment of every session, to the server's directory: how stop() finds what
# the sessions started.
MARKER = "TKE_TEST_SSHD"


def ensure_openssh_server() -> str:
    """The sshd binary, installing Debian's openssh-server when it is missing."""
    if os.path.exists(SSHD):
        return SSHD
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        subprocess.run(cmd, env=env, capture_output=True, check=True)
    if not os.path.exists(SSHD):
        raise RuntimeError("openssh-server installed but /usr/sbin/sshd is missing")
    return SSHD


def keypair(directory: Path, name: str) -> tuple[Path, str]:
    """An ed25519 key: (private key file in OpenSSH format, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path = directory / name
    path.write_bytes(private)
    path.chmod(0o600)
    return path, public.decode()


# bash sources ~/.bashrc for a command sshd runs when its level is below 2; a session that starts
# at SHLVL 1 runs commands only, so the tests never depend on (or wait for) the login user's shell
# set-up, such as a version manager's rehash lock.
SESSION_ENV = {"SHLVL": "1"}


@dataclass
class UserKey:
    private_key_file: Path
    public_line: str


class SSHServer:
    """One sshd. `start()` returns when it accepts connections; `stop()` always cleans up."""

    def __init__(
        self,
        directory: Path,
        user_key: UserKey,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        *,
        port: int = 0,
        launcher: Sequence[str] = (),
        extra_config: Sequence[str] = (),
    ) -> None:
        """`port` 0 picks a free one; `launcher` is put before sshd's command line (to start it
        in a network namespace of its own: the address is that namespace's, and its port is
        free there); `extra_config` lines are added to sshd_config (a ForceCommand, ...)."""
        self.directory = directory
        # Variables every session gets (sshd's SetEnv): a PATH with stand-in programs first.
        self.env = env or {}
        self.host = host
        self.user_key = user_key
        self.wanted_port = port
        self.port = 0
        self.launcher = list(launcher)
        self.extra_config = list(extra_config)
        self.process: subprocess.Popen[bytes] | None = None
        self.host_public = ""

    def session_env(self) -> dict[str, str]:
        return {**SESSION_ENV, **self.env, MARKER: self.marker}

    @property
    def marker(self) -> str:
        return str(self.directory)

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_public}"

    def start(self, timeout: float = 30.0) -> None:
        sshd = ensure_openssh_server()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        self.directory.mkdir(parents=True, exist_ok=True)
        host_key, self.host_public = keypair(self.directory, "ssh_host_ed25519_key")
        authorized = self.directory / "authorized_keys"
        authorized.write_text(self.user_key.public_line + "\n")
        self.port = self.wanted_port or free_port(self.host)
        config = self.directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {host_key}",
                    f"PidFile {self.directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "Subsystem sftp internal-sftp",
                    "MaxStartups 100",
                    "LogLevel ERROR",
                    " ".join(["SetEnv", *(f'{k}="{v}"' for k, v in self.session_env().items())]),
                    *self.extra_config,
                    "",
                ]
            )
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child's for its lifetime
        self.process = subprocess.Popen(
            [*self.launcher, sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd on {self.host}:{self.port} did not answer within {timeout}s")

    def stop(self) -> None:
        """Stop the listener and every process its connections started, still running or not:
        sshd runs each connection in a session of its own (setsid), so its process group is
        only the listener, and a command outlives a closed connection. The per-connection
        sshd processes are the listener's descendants; what the sessions ran carries the
        server's MARKER in its environment, wherever it went since."""
        if self.process is None:
            return
        connections = processes.descendants(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        left = processes.kill_all(
            lambda: [p for p in connections if processes.running(p)] + processes.carrying(MARKER, self.marker)
        )
        if left:
            raise RuntimeError(f"sshd {self.host}:{self.port}: processes {left} of its sessions would not die")


def has_sshd() -> bool:
    return os.path.exists(SSHD) or shutil.which("apt-get") is not None


@dataclass
class Machines:
    """Several sshd "machines" on 127.0.x.y addresses sharing one user key and known_hosts."""

    servers: list[SSHServer]
    key: UserKey
    known_hosts: Path
    # Providers' root_dir for these machines: each machine's files under root/<its ip>.
    root: Path

    def root_of(self, server: SSHServer) -> Path:
        return self.root / server.host

    @property
    def root_dir(self) -> str:
        return f"{self.root}/{{ip}}"


@contextlib.contextmanager
def ssh_machines(directory: Path, count: int = 2, env: dict[str, str] | None = None) -> Iterator[Machines]:
    """Start `count` sshd servers on distinct loopback addresses; stop them all on exit.
    `env`: variables of every session (a PATH with stand-in programs first, ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    key_file, public = keypair(directory, "id_ed25519")
    key = UserKey(key_file, public)
    base = random.randrange(2, 250)
    servers = [SSHServer(directory / f"sshd-{i}", key, host=f"127.0.{base}.{10 + i}", env=env) for i in range(count)]
    try:
        for server in servers:
            server.start()
        known = directory / "known_hosts"
        known.write_text("".join(s.known_hosts_line() + "\n" for s in servers))
        yield Machines(servers, key, known, directory / "machines")
    finally:
        failures = []
        for server in servers:
            try:
                server.stop()
            except RuntimeError as err:  # the others are stopped all the same
                failures.append(err)
        if failures:
            raise failures[0]
