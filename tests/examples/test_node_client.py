"""The Node.js example (examples/node/client.js) against a real apiserver with the built-in
accounts: it logs in, watches, creates a cluster, decodes an error's google.rpc details and sees
the cluster deleted. Its npm packages are installed by `npm ci` from the committed lock file."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import accounts
from tests.support.apiserver import ThreadedApiserver
from tests.support.tools import tool
from tke.internal.storage.etcd import EtcdConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"


@pytest.fixture(scope="module")
def node_client() -> str:
    """node, once `npm ci` has installed examples/node/node_modules."""
    node, npm = tool("node", "nodejs"), tool("npm", "npm")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return node


@pytest.fixture
def api(etcd_config: EtcdConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in accounts.environment().items():
        monkeypatch.setenv(key, value)
    with ThreadedApiserver(accounts.accounts_config(etcd_config)) as running:
        yield f"127.0.0.1:{running.port}"


def run_client(node: str, *args: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TKE_PASSWORD": password}
    return subprocess.run(
        [node, str(EXAMPLE / "client.js"), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_node_client_logs_in_creates_watches_and_shows_error_details(node_client: str, api: str) -> None:
    result = run_client(node_client, "--server", api, "--username", accounts.ADMIN, "--cluster", "from-node",
                        password=accounts.ADMIN_PASSWORD)  # fmt: skip
    print(result.stdout)  # shown when the test fails
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert lines[0].startswith("login: ok user=admin expires=")
    assert any(line.startswith("create: cluster from-node uid=") and "generation=1" in line for line in lines)
    assert any(line.startswith("watch: ADDED from-node resourceVersion=") for line in lines)
    assert "error: INVALID_ARGUMENT: invalid cluster.metadata.name: " in result.stdout
    assert "error detail: google.rpc.BadRequest field=cluster.metadata.name description=" in result.stdout
    assert "error detail: google.rpc.BadRequest field=cluster.spec.network.service_cidr description=" in result.stdout
    assert 'error: NOT_FOUND: cluster "no-such-cluster" not found' in result.stdout
    assert "error detail: google.rpc.ResourceInfo" in result.stdout
    assert "delete: cluster from-node" in result.stdout
    assert lines[-1] == "done: ADDED from-node, DELETED from-node"


def test_node_client_reports_a_failed_login(node_client: str, api: str) -> None:
    result = run_client(node_client, "--server", api, "--username", accounts.ADMIN, password="not the password")
    assert result.returncode == 1
    assert result.stderr.startswith("error: UNAUTHENTICATED: "), result.stderr
