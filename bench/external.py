"""Figures 5 and 6 come from the IPAM and CNI engineers' own benches, run as they are
(`python -m bench.ipamd`, `python -m bench.cni`) in child processes, each asked to write its
figures as JSON (`--json`); their printed lines are kept whole in the result file for a reader.
A bench that fails leaves its figures out (None) rather than guessing."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.procs import python


def _run(module: str, args: list[str], timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bench's figures ({} when it wrote none) and what it printed."""
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
        figures_file = Path(tmp) / "figures.json"
        argv = [*python(), "-m", module, *args, "--json", str(figures_file)]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
            code, stdout, stderr = out.returncode, out.stdout, out.stderr
        except subprocess.TimeoutExpired as err:
            code, stderr = -1, "timeout"
            stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        figures = json.loads(figures_file.read_text()) if code == 0 and figures_file.exists() else {}
    return figures, {"exit_code": code, "output": stdout.splitlines(), "stderr_tail": stderr.splitlines()[-5:]}


def ipam(seconds: float, timeout: float = 300.0) -> dict[str, Any]:
    figures, printed = _run("bench.ipamd", ["--seconds", str(seconds)], timeout)
    keys = ("etcd_cas_per_s", "ipamd_calls_per_s", "ratio_to_etcd", "ratio_rounds", "ratio_by_cpu", "cpu_us_per_cas",
            "cpu_us_per_call", "p50_5pct_ms", "p50_95pct_ms", "fill_latency_ratio", "two_replicas_vs_one")  # fmt: skip
    return printed | {key: figures.get(key) for key in keys}


def cni(rounds: int, concurrent: int, timeout: float = 400.0) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"skipped": "the CNI bench needs root (network namespaces)"}
    figures, printed = _run("bench.cni", ["--rounds", str(rounds), "--concurrent", str(concurrent)], timeout)
    rows: dict[str, dict[str, float]] = figures.get("rows", {})
    ipamd_row = rows.get("ADD+DEL cni-switch -> bridge -> tke-ipamc -> ipamd", {})
    base_row = rows.get("ADD+DEL bridge+host-local", {})
    result = printed | {
        "rows": rows,
        "add_del_ipamd_x_baseline": ipamd_row.get("x_baseline"),
        "add_del_ipamd_x_baseline_cpu": ipamd_row.get("x_baseline_cpu"),
        "add_del_ipamd_cpu_ms": ipamd_row.get("cpu_ms"),
        "add_del_baseline_cpu_ms": base_row.get("cpu_ms"),
        "add_del_host_local_x_baseline": rows.get("ADD+DEL cni-switch -> bridge+host-local", {}).get("x_baseline"),
    }
    for key in ("concurrent_adds", "concurrent_wall_s", "concurrent_failed", "concurrent_duplicates"):
        result[key] = figures.get(key)
    for verb in ("cni-switch", "tke-ipamc"):
        result[f"version_{verb}_ms"] = rows.get(f"VERSION {verb}", {}).get("median_ms")
    return result
