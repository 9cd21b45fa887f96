"""What each demo machine ran, from the sessions logs its sshd's ForceCommand writes
(machines.py): NUL-terminated records `start TAB TIME TAB PID TAB COMMAND` and `end TAB TIME
TAB PID TAB STATUS`.

The platform sends each command as `export VAR=... ; exec timeout ... "${SHELL:-/bin/sh}" -c
'COMMAND'` (tke.internal.provider.ssh): a line shows COMMAND alone (the environment holds
secrets, such as a bootstrap token, and is not shown), with the machine's root directory
dropped from its paths, so it reads as on a real machine."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ran:
    started: float
    machine: str
    role: str
    command: str  # as sent over SSH
    status: int | None  # None: still running, or the session was cut off

    def line(self, root: str = "", width: int = 0) -> str:
        shown = unwrap(self.command)
        if root:
            shown = shown.replace(root.rstrip("/") + "/", "/")
        who = f"{self.machine} ({self.role})".ljust(width)
        status = "" if self.status == 0 else f"   # exit status {self.status if self.status is not None else '?'}"
        return f"{who} $ {' '.join(shown.split())}{status}"


def read(path: Path, machine: str, role: str) -> list[Ran]:
    """The commands of one machine's sessions log, in the order they started."""
    try:
        records = path.read_bytes().split(b"\0")
    except FileNotFoundError:
        return []
    out: list[Ran] = []
    running: dict[str, int] = {}  # pid -> index in out of its session's command
    for record in records:
        fields = record.decode(errors="replace").split("\t", 3)
        if len(fields) != 4:
            continue
        kind, when, pid, rest = fields
        if kind == "start":
            running[pid] = len(out)
            out.append(Ran(float(when), machine, role, rest, None))
        elif kind == "end" and pid in running:
            i = running.pop(pid)
            out[i] = dataclasses.replace(out[i], status=int(rest))
    return out


def unwrap(command: str) -> str:
    """The command inside the platform's `timeout ... -c 'COMMAND'` wrapper (itself when not
    wrapped)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if "timeout" in words:
        rest = words[words.index("timeout") :]
        if "-c" in rest and rest.index("-c") + 1 < len(rest):
            return rest[rest.index("-c") + 1]
    return command


def merged(runs: Iterable[Iterable[Ran]]) -> list[Ran]:
    """Every machine's commands in the order they started."""
    return sorted((r for machine in runs for r in machine), key=lambda r: r.started)
