"""The demo's machines: each in a network namespace of its own (network.py) and a UTS
namespace with its name as host name (so `hostname`, the providers' default node name
command, names the node as on a real machine), running Debian's sshd bound to its address on
port 22, with a host key made for the demo and the platform's key authorized. Sessions get
the stand-in programs first on PATH (tests/support/standins.py) in a live world (the stand-in
kubeadm runs the Kubernetes API stand-in, the VIP and the kubelets' Nodes, see
tests/support/standin_kube.py), and each machine's files live under its own root directory
(the providers' root_dir).

sshd's ForceCommand (session.sh) records every command a session runs, with its start time
and exit status, in the machine's sessions log before running it as sshd would: that is what
the demo prints as "what each machine ran" (sessions.py). File transfers (SFTP) go to
sftp-server unrecorded.

Stopping the machines ends every process their sessions started (SSHServer.stop), the API
stand-in and haproxy among them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support import standins
from tests.support.demo.network import Network
from tests.support.kubeadm_world import WORLD_ENV, World
from tests.support.sshd import SSHServer, UserKey, keypair

SESSION_SCRIPT = """#!/bin/bash
# sshd's ForceCommand on a demo machine: record the session's command (start time, pid,
# command), run it as sshd would (the login shell, -c), record its exit status.
cmd="$SSH_ORIGINAL_COMMAND"
case "$cmd" in
  internal-sftp) exec /usr/lib/openssh/sftp-server ;;
  "") exec /bin/bash -l ;;
esac
printf 'start\\t%s\\t%s\\t%s\\0' "$EPOCHREALTIME" "$$" "$cmd" >>"$TKE_DEMO_SESSIONS"
/bin/bash -c "$cmd"
status=$?
printf 'end\\t%s\\t%s\\t%s\\0' "$EPOCHREALTIME" "$$" "$status" >>"$TKE_DEMO_SESSIONS"
exit $status
"""
FIRST_HOST = 11
CONTROL_PLANE = "control-plane"
WORKER = "worker"


@dataclass(frozen=True)
class DemoMachine:
    name: str
    role: str  # CONTROL_PLANE or WORKER
    address: str
    namespace: str
    server: SSHServer
    sessions: Path  # the log session.sh writes


@dataclass
class Machines:
    machines: list[DemoMachine]
    key: UserKey
    known_hosts: Path
    world: World

    @property
    def root_dir(self) -> str:
        """The providers' root_dir: each machine's files under world/machines/<its address>."""
        return f"{self.world.machines_root}/{{ip}}"

    def of_role(self, role: str) -> list[DemoMachine]:
        return [m for m in self.machines if m.role == role]


def names(masters: int, workers: int) -> list[tuple[str, str]]:
    return [(f"master-{i}", CONTROL_PLANE) for i in range(1, masters + 1)] + [
        (f"worker-{i}", WORKER) for i in range(1, workers + 1)
    ]


@contextlib.contextmanager
def machines(directory: Path, net: Network, layout: Sequence[tuple[str, str]]) -> Iterator[Machines]:
    """Start a machine per (name, role) of `layout`; stop them all on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    world = World(directory / "world")
    world.directory.mkdir(parents=True, exist_ok=True)
    (world.directory / "live").touch()
    bin_dir = directory / "standin-bin"
    standins.install(bin_dir)
    script = directory / "session.sh"
    script.write_text(SESSION_SCRIPT)
    script.chmod(0o755)
    key_file, public = keypair(directory, "id_ed25519")
    key = UserKey(key_file, public)
    started: list[DemoMachine] = []
    try:
        for i, (name, role) in enumerate(layout):
            address = net.address(FIRST_HOST + i)
            ns = net.add_machine(name, FIRST_HOST + i)
            sessions = directory / f"sessions-{name}.log"
            env = {
                WORLD_ENV: str(world.directory),
                "PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TKE_DEMO_SESSIONS": str(sessions),
            }
            # The namespace, then a host name of its own, then sshd (each execs the next).
            launcher = [
                "ip",
                "netns",
                "exec",
                ns,
                "unshare",
                "--uts",
                "--",
                "sh",
                "-c",
                'hostname "$0" && exec "$@"',
                name,
            ]
            server = SSHServer(
                directory / f"sshd-{name}",
                key,
                host=address,
                env=env,
                port=22,
                launcher=launcher,
                extra_config=[f"ForceCommand {script}"],
            )
            started.append(DemoMachine(name, role, address, ns, server, sessions))
            server.start()
        known = directory / "known_hosts"
        known.write_text("".join(f"{m.address} {m.server.host_public}\n" for m in started))
        yield Machines(started, key, known, world)
    finally:
        failures = []
        for m in started:
            try:
                m.server.stop()
            except RuntimeError as err:  # the others are stopped all the same
                failures.append(err)
        if failures:
            raise failures[0]
