"""tkectl as an operator runs it: the real binary as a subprocess, against a real apiserver
(built-in accounts and the policy centre) and a real tke-ipamd, with its own config file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import accounts
from tests.support.apiserver import ThreadedApiserver
from tests.support.ipamd_daemon import IpamdDaemon
from tke.internal.storage.etcd import EtcdConfig

TKECTL = str(Path(sys.executable).parent / "tkectl")


@dataclass
class Platform:
    api: str
    ipamd: str
    home: Path
    config: Path

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "TKECONFIG": str(self.config),
            **(env or {}),
        }
        return subprocess.run(
            [TKECTL, *args], input=stdin, capture_output=True, text=True, env=environ, timeout=timeout, check=False
        )

    def ok(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
        result = self.run(*args, stdin=stdin, env=env)
        assert result.returncode == 0, f"tkectl {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
        assert "Traceback" not in result.stderr
        return result.stdout

    def write(self, name: str, text: str) -> str:
        path = self.home / name
        path.write_text(text)
        return str(path)


@pytest.fixture
def platform(etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    for key, value in accounts.environment().items():
        monkeypatch.setenv(key, value)
    with (
        ThreadedApiserver(accounts.accounts_config(etcd_config)) as api,
        IpamdDaemon(list(etcd_config.endpoints), etcd_config.prefix + "-ipam") as ipamd,
    ):
        yield Platform(f"127.0.0.1:{api.port}", ipamd.target, tmp_path, tmp_path / "tke" / "config")


@pytest.fixture
def admin(platform: Platform) -> Platform:
    """The platform with a context "dev" logged in as the bootstrap administrator."""
    platform.ok("config", "set-context", "dev", "--server", platform.api, "--ipamd", platform.ipamd, "--use")
    out = platform.ok("login", "-u", accounts.ADMIN, "--password-stdin", stdin=accounts.ADMIN_PASSWORD + "\n")
    assert "logged in as admin" in out
    return platform
