"""deploy/systemd: one unit per long-running binary, each with its secrets in an
EnvironmentFile, restarted on failure, hardened, and accepted by `systemd-analyze verify`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tools import tool

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
BINARIES = ("tke-apiserver", "tke-ipamd", "tke-controller")


def settings(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("binary", BINARIES)
def test_unit_runs_the_binary_hardened_with_secrets_from_an_environment_file(binary: str) -> None:
    s = settings(UNITS / f"{binary}.service")
    assert s["ExecStart"] == [f"/opt/tke/venv/bin/{binary} --config /etc/tke/{binary.removeprefix('tke-')}.toml"]
    assert s["EnvironmentFile"][0].lstrip("-").startswith("/etc/tke/")
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["tke"]
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID"):
        assert s[option] == ["yes"], option
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""]


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    bin_dir = Path(sys.executable).parent
    for binary in BINARIES:
        text = (UNITS / f"{binary}.service").read_text().replace("/opt/tke/venv/bin", str(bin_dir))
        (tmp_path / f"{binary}.service").write_text(text)
    units = [str(tmp_path / f"{b}.service") for b in BINARIES]
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "tke-" not in result.stderr, result.stderr  # no warning about our units
