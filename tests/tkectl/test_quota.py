"""`tkectl get quota [-n TENANT] [-o yaml|json]` as an operator and a tenant's user run it: the
real binary against a real apiserver (built-in accounts, policy centre, default quotas)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.support.apiserver import ThreadedApiserver, local_config
from tests.support.waiting import wait_until
from tke.internal.apiserver.quota import QuotaConfig
from tke.internal.storage.etcd import EtcdConfig

from .conftest import Platform

USER = "kind: User\nmetadata: {name: alice, tenantId: team-a}\npassword: alice's long password\n"
EDITOR = """\
kind: RoleBinding
metadata: {name: alice-editor}
spec: {role: editor, subjects: [{kind: User, name: alice}]}
"""
CLUSTER = """\
kind: Cluster
metadata: {name: demo}
spec:
  type: baremetal
  version: 1.30.2
  network: {podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12}
"""


def rows(table: str) -> dict[str, list[str]]:
    lines = [line.split() for line in table.splitlines()]
    assert lines[0] == ["RESOURCE", "USED", "LIMIT", "QUOTA"], table
    return {cells[0]: cells[1:] for cells in lines[1:]}


def test_get_quota_shows_used_and_limits_to_the_operator_and_the_tenant(admin: Platform) -> None:
    admin.ok("create", "-f", admin.write("alice.yaml", USER))
    admin.ok("create", "-f", admin.write("rb.yaml", EDITOR), "-n", "team-a")
    admin.ok("create", "-f", admin.write("cluster.yaml", CLUSTER), "-n", "team-a")

    table = rows(admin.ok("get", "quota", "-n", "team-a"))
    assert list(table) == ["clusters", "machines", "events", "roles", "rolebindings", "users", "apikeys", "bytes"]
    assert table["clusters"] == ["1", "100", "quotas.clusters"]
    assert table["machines"] == ["0", "2000", "quotas.machines"]
    assert table["rolebindings"] == ["1", "1000", "quotas.rolebindings"]
    assert table["users"] == ["1", "1000", "quotas.users"]
    assert int(table["bytes"][0]) > 0 and table["bytes"][1:] == ["67108864", "quotas.bytes"]

    as_yaml = yaml.safe_load(admin.ok("get", "quota", "-n", "team-a", "-o", "yaml"))
    as_json = json.loads(admin.ok("get", "quotas", "-n", "team-a", "-o", "json"))
    assert as_yaml == as_json
    assert (as_yaml["kind"], as_yaml["tenantId"], as_yaml["enabled"]) == ("Quota", "team-a", True)
    by_resource = {r["resource"]: r for r in as_yaml["resources"]}
    # The proto's JSON mapping (int64 as strings), zero values printed: a used of 0 is an answer.
    assert by_resource["machines"] == {"resource": "machines", "used": "0", "limit": "2000", "quota": "quotas.machines"}
    assert by_resource["clusters"]["used"] == "1"

    # alice, an editor of team-a, sees her own tenant's without naming it, and not another's.
    admin.ok("config", "set-context", "alice", "--server", admin.api, "--use")
    admin.ok("login", "-u", "alice", "--password-stdin", stdin="alice's long password\n")

    def shown() -> subprocess.CompletedProcess[str] | None:
        """The role binding reaches the authorizer's cache through a watch."""
        result = admin.run("get", "quota")
        return result if result.returncode == 0 else None

    assert rows(wait_until(shown, what="alice reading her quotas").stdout)["clusters"] == [
        "1",
        "100",
        "quotas.clusters",
    ]
    denied = admin.run("get", "quota", "-n", "default")
    assert denied.returncode == 5 and denied.stdout == ""
    assert denied.stderr.startswith("tkectl: PERMISSION_DENIED: user 'alice' may not get quotas in tenant 'default'")


def test_get_quota_refuses_what_does_not_apply(admin: Platform) -> None:
    for args, message in (
        (["get", "quota", "-A"], "-A/--all-tenants do not apply to quotas"),
        (["get", "quota", "-n", "*"], "one tenant at a time"),
        (["get", "quota", "team-a"], "get quota takes no name"),
        (["get", "quota", "-o", "name"], "-o name does not apply to quotas"),
        (["get", "quota", "-l", "env=dev"], "-l/--selector do not apply to quotas"),
        (["delete", "quota"], "quotas are read-only"),
        (["describe", "quotas"], "quotas are read-only"),
    ):
        result = admin.run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)


def test_with_quotas_off_get_quota_says_so(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    with ThreadedApiserver(local_config(etcd_config, quotas=QuotaConfig(enabled=False))) as api:
        platform = Platform(f"127.0.0.1:{api.port}", "", tmp_path, tmp_path / "config")
        result = platform.run("get", "quota", "--server", platform.api, "-n", "team-a")
        assert (result.returncode, result.stdout) == (0, "")
        assert result.stderr == (
            "tkectl: quotas are off on this apiserver (quotas.enabled = false): tenant 'team-a' is not limited\n"
        )
        as_json = json.loads(platform.ok("get", "quota", "--server", platform.api, "-n", "team-a", "-o", "json"))
        assert as_json == {"kind": "Quota", "tenantId": "team-a", "enabled": False, "resources": []}
