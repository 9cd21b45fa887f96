"""The simulated world of stand-in machines: what the stand-in kubeadm, kubelet, systemctl,
apt-get, ... (tests/support/standins.py) did to each machine and to the one cluster they
build, kept in a JSON file that every stand-in process and the kubelets of
tests/support/world_api.py read and change under a file lock; and the log of every
call, one JSON line each: {"machine": IP, "argv": [...], "ok": bool, "error": "...",
"documents": {kind: apiVersion}} (kubeadm's: the documents of its --config file).

Each machine is a directory of its own (<machines root>/<IP>/etc/..., the providers' root_dir)
on this host; the stand-ins find their machine from the address sshd was reached on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORLD_ENV = "TKE_STANDIN_WORLD"
# Seconds to wait for the world's lock (LOCK_WAIT_ENV overrides, for tests of the wait).
LOCK_WAIT = 60.0
LOCK_WAIT_ENV = "TKE_STANDIN_LOCK_WAIT"


class WorldBusy(TimeoutError):
    """The world's lock stayed taken for longer than the wait."""


def _lock(fd: int, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise WorldBusy(f"the stand-in world stayed locked for {wait:g}s") from None
            time.sleep(0.01)


@dataclass(frozen=True)
class World:
    directory: Path

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def calls_file(self) -> Path:
        return self.directory / "calls.jsonl"

    @property
    def machines_root(self) -> Path:
        return self.directory / "machines"

    def root_of(self, ip: str) -> Path:
        return self.machines_root / ip

    @contextlib.contextmanager
    def state(self) -> Iterator[dict[str, Any]]:
        """The state, locked for the block and written back after it. The lock is waited for
        at most LOCK_WAIT seconds (WorldBusy after that): a holder that never lets go (a
        stand-in waiting on a pipe while holding it) fails the call that waits, with a
        message, instead of hanging it and every later one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "lock", "a+") as lock:
            _lock(lock.fileno(), float(os.environ.get(LOCK_WAIT_ENV, LOCK_WAIT)))
            try:
                state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
                state.setdefault("machines", {})
                state.setdefault("cluster", None)
                yield state
                tmp = self.state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
                os.replace(tmp, self.state_file)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        with self.state() as state:
            copy: dict[str, Any] = json.loads(json.dumps(state))
            return copy

    def log(self, record: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.calls_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def calls(self, program: str | None = None) -> list[dict[str, Any]]:
        if not self.calls_file.exists():
            return []
        out = [json.loads(line) for line in self.calls_file.read_text().splitlines() if line.strip()]
        return [c for c in out if program is None or c["argv"][0] == program]

    @property
    def live(self) -> bool:
        """Whether the machines' cluster answers for real (tests/support/standin_kube.py): the
        API stand-in runs on the first master, the VIP is added to its interface, kubelets
        register Nodes. Only for machines in network namespaces of their own (the demo's)."""
        return (self.directory / "live").exists()

    def fault(self, name: str) -> Path:
        """A file whose presence makes a stand-in fail on purpose (see standins.py)."""
        return self.directory / "faults" / name


@contextlib.contextmanager
def kubeadm_machines(directory: Path, count: int) -> Iterator[tuple[Any, World]]:
    """`count` sshd machines whose PATH starts with the stand-in programs, sharing one world
    (machine roots under world/machines/<IP>): (tests.support.sshd.Machines, World)."""
    from tests.support import standins
    from tests.support.sshd import ssh_machines

    world = World(directory / "world")
    bin_dir = directory / "standin-bin"
    standins.install(bin_dir)
    env = {
        WORLD_ENV: str(world.directory),
        "PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    with ssh_machines(directory, count, env=env) as machines:
        machines.root = world.machines_root
        yield machines, world
