"""Finding and ending the processes a test started, by pid, through /proc: the descendants of a
process, and the processes carrying a marker in their environment (which every child
inherits, so it finds them after their parent died and they moved to another parent, or left
their session and process group). Processes whose environment or parent cannot be read (gone,
or a zombie) are skipped."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after "pid (comm)": state, ppid, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after its last ")".
    return stat.rsplit(")", 1)[1].split()


def _parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def running(pid: int) -> bool:
    """Alive: a zombie, waiting for its parent to collect its status, counts as gone."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in _pids():
        parent = _parent(p)
        if parent is not None:
            children.setdefault(parent, []).append(p)
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def carrying(name: str, value: str) -> list[int]:
    """Processes whose environment holds name=value (this process excluded)."""
    wanted = f"{name}={value}".encode()
    out = []
    for p in _pids():
        if p == os.getpid() or not running(p):
            continue
        try:
            environ = Path(f"/proc/{p}/environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            out.append(p)
    return out


def kill_all(find: Callable[[], Iterable[int]], within: float = 10.0) -> list[int]:
    """SIGKILL what `find` returns, again and again (a process may fork while its parent is
    being killed) until it returns nothing; the pids that were still there after `within`
    seconds (none: every one is gone)."""
    deadline = time.monotonic() + within
    while True:
        left = sorted(set(find()))
        if not left or time.monotonic() >= deadline:
            return left
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
