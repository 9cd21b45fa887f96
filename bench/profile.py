"""Figure 7: a profile of the slowest path, taken with py-spy (sampling, from outside the
process, so the profiled server runs unmodified) while the load of that path runs.

Saved beside the results: the raw collapsed stacks (`*.txt`, one `stack count` line each, the
input of any flamegraph tool), an SVG flamegraph, and a summary of where the time goes
(inclusive share of our own modules' functions, self share of everything) in the result file."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is missing: `make setup` installs the dev dependencies")
    return found


def record(pid: int, seconds: float, out: Path, fmt: str = "raw") -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` (returns at once; wait on the process)."""
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
            "--format", fmt, "-o", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """'intercept (tke/internal/auth/interceptors.py:123)' -> 'auth/interceptors.py:intercept'."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("/internal/", "/plugins/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{m.group('func')}"


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Shares of samples: inclusive by function (counted once per stack), self by leaf."""
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        total += count
        if any("selectors" in f for f in frames[-2:]):
            idle += count
        for name in set(frames):
            inclusive[name] += count
        leaf[frames[-1]] += count
    if not total:
        return {"samples": 0}

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(n / total, 3)) for name, n in counter.most_common(top)]

    ours = collections.Counter({k: v for k, v in inclusive.items() if k.startswith(("internal/", "plugins/",
                                "storage/", "metrics/", "authz/", "authn/", "audit/"))})  # fmt: skip
    return {
        "samples": total,
        "idle_share": round(idle / total, 3),
        "inclusive_ours": share(ours),
        "inclusive_all": share(inclusive),
        "self": share(leaf),
    }
