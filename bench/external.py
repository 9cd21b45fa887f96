"""Figures 5 and 6 come from the IPAM and CNI engineers' own benches, run as they are
(`python -m bench.ipamd`, `python -m bench.cni`) in child processes;
their printed lines are kept whole in the result file and the figures the targets need are read
from them. A line that cannot be read leaves its number out (None) rather than guessing."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

from bench.procs import python

_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _run(module: str, args: list[str], timeout: float) -> tuple[int, str, str]:
    try:
        out = subprocess.run(
            [*python(), "-m", module, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        return -1, (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or ""), "timeout"
    return out.returncode, out.stdout, out.stderr


def _find(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else None


def ipam(seconds: float, timeout: float = 300.0) -> dict[str, Any]:
    code, out, err = _run("bench.ipamd", ["--seconds", str(seconds)], timeout)
    result: dict[str, Any] = {"exit_code": code, "output": out.splitlines(), "stderr_tail": err.splitlines()[-5:]}
    result["etcd_cas_per_s"] = _find(rf"etcd CAS transactions.*?:\s*{_NUMBER}/s", out)
    result["ipamd_calls_per_s"] = _find(rf"Allocate\+Release.*?:\s*{_NUMBER} calls/s", out)
    result["ratio_to_etcd"] = _find(rf"=\s*{_NUMBER} x etcd CAS rate", out)
    result["ratio_by_cpu"] = _find(rf"ratio by CPU.*?:\s*{_NUMBER} x etcd CAS", out)
    for what, key in (("etcd CAS", "cpu_us_per_cas"), ("Allocate or Release", "cpu_us_per_call")):
        line = re.search(rf"^CPU per {what}:(.*)$", out, re.M)
        if line:
            result[key] = {name: float(us) for name, us in re.findall(rf"(\w+) {_NUMBER} us", line.group(1))}
    result["p50_5pct_ms"] = _find(rf"5% full:\s*p50\s*{_NUMBER} ms", out)
    result["p50_95pct_ms"] = _find(rf"95% full:\s*p50\s*{_NUMBER} ms", out)
    result["fill_latency_ratio"] = _find(rf"latency ratio 95% / 5% fill.*?:\s*{_NUMBER}", out)
    replicas = _find(rf"(?:two|2) (?:ipamd )?replicas.*?{_NUMBER}\s*x", out)
    result["two_replicas_vs_one"] = replicas
    return result


def cni(rounds: int, concurrent: int, timeout: float = 400.0) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"skipped": "the CNI bench needs root (network namespaces)"}
    code, out, err = _run("bench.cni", ["--rounds", str(rounds), "--concurrent", str(concurrent)], timeout)
    result: dict[str, Any] = {"exit_code": code, "output": out.splitlines(), "stderr_tail": err.splitlines()[-5:]}
    rows: dict[str, dict[str, float]] = {}
    for line in out.splitlines():
        m = re.match(rf"^(\S.*?)\s+{_NUMBER}\s+{_NUMBER}\s+{_NUMBER}(?:\s+{_NUMBER}\s+{_NUMBER})?\s*$", line)
        if m:
            rows[m.group(1).strip()] = {
                "median_ms": float(m.group(2)),
                "p95_ms": float(m.group(3)),
                "x_baseline": float(m.group(4)),
            }
            if m.group(5) is not None:
                rows[m.group(1).strip()] |= {"cpu_ms": float(m.group(5)), "x_baseline_cpu": float(m.group(6))}
    result["rows"] = rows
    ipamd_row = next((v for k, v in rows.items() if k.startswith("ADD+DEL cni-switch") and "ipamc" in k), None)
    result["add_del_ipamd_x_baseline"] = ipamd_row["x_baseline"] if ipamd_row else None
    result["add_del_ipamd_x_baseline_cpu"] = ipamd_row.get("x_baseline_cpu") if ipamd_row else None
    result["add_del_ipamd_cpu_ms"] = ipamd_row.get("cpu_ms") if ipamd_row else None
    base_row = next((v for k, v in rows.items() if k.startswith("ADD+DEL bridge+host-local")), None)
    result["add_del_baseline_cpu_ms"] = base_row.get("cpu_ms") if base_row else None
    host_local_row = next((v for k, v in rows.items() if k.startswith("ADD+DEL cni-switch") and "ipamc" not in k), None)
    result["add_del_host_local_x_baseline"] = host_local_row["x_baseline"] if host_local_row else None
    m = re.search(rf"(\d+) concurrent ADDs.*?{_NUMBER} s wall, (\d+) failed", out)
    if m:
        result["concurrent_adds"] = int(m.group(1))
        result["concurrent_wall_s"] = float(m.group(2))
        result["concurrent_failed"] = int(m.group(3))
    dup = re.search(r"(\d+) duplicate", out)
    result["concurrent_duplicates"] = int(dup.group(1)) if dup else None
    for verb in ("cni-switch", "tke-ipamc"):
        row = rows.get(f"VERSION {verb}")
        result[f"version_{verb}_ms"] = row["median_ms"] if row else None
    return result
