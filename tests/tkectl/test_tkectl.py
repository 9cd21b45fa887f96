"""tkectl end to end, as an operator uses it: contexts and login, create from a file, get in
every output, apply twice, edit, describe, watch, delete, pools from tke-ipamd, users and role
bindings, and the exit codes and one-line errors scripts rely on."""

from __future__ import annotations

import json
import stat
import subprocess

import yaml

from tests.support import accounts
from tests.support.waiting import Lines, wait_until

from .conftest import TKECTL, Platform

CLUSTER = """\
kind: Cluster
metadata:
  name: demo
  labels: {env: dev}
spec:
  type: baremetal
  version: 1.30.2
  network: {podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12}
"""


def test_login_creates_the_context_it_names(platform: Platform) -> None:
    platform.ok(
        "login", "--context", "fresh", "--server", platform.api, "-u", "admin", "--password-stdin",
        stdin=accounts.ADMIN_PASSWORD + "\n",
    )  # fmt: skip
    saved = yaml.safe_load(platform.config.read_text())
    assert saved["current-context"] == "fresh"
    assert saved["contexts"]["fresh"]["server"] == platform.api
    assert json.loads(platform.ok("get", "clusters", "-o", "json")) == {"kind": "List", "items": []}


def test_login_stores_the_token_in_the_context(platform: Platform) -> None:
    platform.ok("config", "set-context", "dev", "--server", platform.api, "--use")
    wrong = platform.run("login", "-u", "admin", "--password-stdin", stdin="wrong password!\n")
    assert wrong.returncode == 5, wrong.stderr
    assert wrong.stderr.startswith("tkectl: UNAUTHENTICATED"), wrong.stderr
    platform.ok("login", "-u", "admin", "--password-stdin", stdin=accounts.ADMIN_PASSWORD + "\n")
    assert stat.S_IMODE(platform.config.stat().st_mode) == 0o600
    saved = yaml.safe_load(platform.config.read_text())
    assert saved["current-context"] == "dev"
    assert saved["contexts"]["dev"]["token"].startswith("tke1.")
    assert saved["contexts"]["dev"]["username"] == "admin"
    assert "REDACTED" in platform.ok("config", "view")
    assert "dev" in platform.ok("config", "get-contexts")
    platform.ok("get", "clusters")
    platform.ok("logout")
    denied = platform.run("get", "clusters")
    assert denied.returncode == 5 and "UNAUTHENTICATED" in denied.stderr


def test_create_get_apply_delete_a_cluster(admin: Platform) -> None:
    path = admin.write("cluster.yaml", CLUSTER)
    assert admin.ok("create", "-f", path).strip() == "cluster/demo created"

    table = admin.ok("get", "clusters").splitlines()
    assert table[0].split() == ["NAME", "TYPE", "VERSION", "PHASE", "AGE"]
    assert table[1].split()[:3] == ["demo", "baremetal", "1.30.2"]
    wide = admin.ok("get", "clusters", "-o", "wide")
    assert "POD-CIDR" in wide and "10.244.0.0/16" in wide and "env=dev" in wide
    one = yaml.safe_load(admin.ok("get", "cluster", "demo", "-o", "yaml"))
    assert one["kind"] == "Cluster" and one["metadata"]["name"] == "demo"
    assert one["spec"]["network"]["podCidr"] == "10.244.0.0/16"
    listed = json.loads(admin.ok("get", "clusters", "-o", "json", "-l", "env=dev"))
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == ["demo"]
    assert json.loads(admin.ok("get", "clusters", "-l", "env=prod", "-o", "json"))["items"] == []
    assert admin.ok("get", "cluster/demo", "-o", "name").strip() == "cluster/demo"

    # A file written by `get -o yaml` applies unchanged; a changed one updates in place.
    exported = admin.write("exported.yaml", admin.ok("get", "cluster", "demo", "-o", "yaml"))
    assert admin.ok("apply", "-f", exported).strip() == "cluster/demo unchanged"
    changed = admin.write("changed.yaml", CLUSTER.replace("1.30.2", "1.31.0").replace("env: dev", "env: prod"))
    assert admin.ok("apply", "-f", changed).strip() == "cluster/demo configured"
    assert admin.ok("apply", "-f", changed).strip() == "cluster/demo unchanged"
    after = json.loads(admin.ok("get", "cluster", "demo", "-o", "json"))
    assert after["spec"]["version"] == "1.31.0" and after["metadata"]["labels"] == {"env": "prod"}
    assert after["metadata"]["generation"] == "2"

    # A stale resource_version is a conflict.
    stale = admin.run("apply", "-f", exported)
    assert stale.returncode == 4, stale.stderr
    assert stale.stderr.startswith("tkectl: cluster/demo: ABORTED: "), stale.stderr

    described = admin.ok("describe", "cluster", "demo")
    assert "Name:" in described and "demo" in described and "Events:" in described

    assert admin.ok("delete", "cluster", "demo").strip() == "cluster/demo deleted"
    missing = admin.run("get", "cluster", "demo")
    assert missing.returncode == 3
    assert missing.stderr == 'tkectl: NOT_FOUND: cluster "demo" not found\n'
    assert admin.run("delete", "cluster", "demo", "--ignore-not-found").returncode == 0


def test_apply_creates_and_a_second_apply_changes_nothing(admin: Platform) -> None:
    path = admin.write("both.yaml", CLUSTER.replace("demo", "web") + "---\n" + CLUSTER.replace("demo", "db"))
    assert admin.ok("apply", "-f", path).splitlines() == ["cluster/web created", "cluster/db created"]
    assert admin.ok("apply", "-f", path).splitlines() == ["cluster/web unchanged", "cluster/db unchanged"]
    machine = admin.write(
        "machine.json",
        json.dumps(
            {
                "kind": "Machine",
                "metadata": {"name": "node-1"},
                "spec": {"clusterName": "web", "type": "baremetal", "ip": "192.0.2.10", "role": "MACHINE_ROLE_WORKER"},
            }
        ),
    )
    assert admin.ok("apply", "-f", machine).strip() == "machine/node-1 created"
    rows = admin.ok("get", "machines", "--cluster", "web").splitlines()
    assert rows[1].split()[:4] == ["node-1", "web", "192.0.2.10", "WORKER"]
    assert len(admin.ok("get", "machines", "--cluster", "db").splitlines()) == 0
    # Several types at once, as kubectl prints them: a table each, names as TYPE/NAME.
    both = admin.ok("get", "clusters,machines").split("\n\n")
    assert [line.split()[0] for line in both[0].splitlines()] == ["NAME", "cluster/db", "cluster/web"]
    assert [line.split()[:2] for line in both[1].splitlines()] == [["NAME", "CLUSTER"], ["machine/node-1", "web"]]
    listed = json.loads(admin.ok("get", "clusters,machines", "-o", "json"))
    assert [(i["kind"], i["metadata"]["name"]) for i in listed["items"]] == [
        ("Cluster", "db"), ("Cluster", "web"), ("Machine", "node-1"),
    ]  # fmt: skip
    assert admin.ok("get", "machines,clusters", "-o", "name").splitlines() == [
        "machine/node-1", "cluster/db", "cluster/web",
    ]  # fmt: skip
    named = admin.run("get", "clusters,machines", "web")
    assert named.returncode == 2 and "without names" in named.stderr
    filtered = admin.run("get", "clusters,machines", "--cluster", "web")
    assert filtered.returncode == 2 and "--cluster does not apply to clusters" in filtered.stderr
    assert admin.ok("delete", "-f", machine).strip() == "machine/node-1 deleted"
    assert admin.ok("delete", "clusters", "-l", "env=dev").splitlines() == ["cluster/db deleted", "cluster/web deleted"]


def test_errors_are_one_line_with_the_code_and_a_usable_exit_code(admin: Platform) -> None:
    bad = admin.write(
        "bad.yaml",
        CLUSTER.replace("name: demo", "name: Bad_Name").replace(
            "serviceCidr: 10.96.0.0/12", "serviceCidr: 10.244.0.0/12"
        ),
    )
    result = admin.run("create", "-f", bad)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("tkectl: cluster/Bad_Name: INVALID_ARGUMENT: cluster.metadata.name: ")
    assert "cluster.spec.network.service_cidr: " in result.stderr

    path = admin.write("cluster.yaml", CLUSTER)
    admin.ok("create", "-f", path)
    again = admin.run("create", "-f", path)
    assert again.returncode == 4 and "ALREADY_EXISTS" in again.stderr

    for args, code, text in [
        (("get", "widgets"), 2, 'unknown resource type "widgets"'),
        (("get", "clusters", "--pool", "x"), 2, "--pool does not apply to clusters"),
        (("watch", "pools"), 2, "watch is not supported for pools"),
        (("create", "-f", admin.write("nokind.yaml", "metadata: {name: x}\n")), 2, "missing kind:"),
        (("create", "-f", admin.write("typo.yaml", "kind: Cluster\nspec: {tpye: x}\n")), 2, "tpye"),
        (("create", "-f", str(admin.home / "absent.yaml")), 2, "cannot read"),
        (("get", "clusters", "--server", "127.0.0.1:1"), 6, "UNAVAILABLE: cannot reach the apiserver at 127.0.0.1:1"),
        (("get", "clusters", "--token", "forged"), 5, "UNAUTHENTICATED"),
        (("get", "clusters", "--context", "nope"), 2, 'no context "nope"'),
        (("edit", "pool", "net-a"), 2, "edit is not supported for pools"),
        (("get", "cluster", "nope", "-o", "yaml"), 3, 'NOT_FOUND: cluster "nope" not found'),
    ]:
        result = admin.run(*args)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        assert text in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stdout == "", result.stdout


def test_edit_through_the_editor(admin: Platform) -> None:
    admin.ok("create", "-f", admin.write("cluster.yaml", CLUSTER))
    editor = admin.write("editor.sh", "#!/bin/sh\nsed -i 's/version: 1.30.2/version: 1.30.5/' \"$1\"\n")
    (admin.home / "editor.sh").chmod(0o755)
    assert admin.ok("edit", "cluster", "demo", env={"EDITOR": editor}).strip() == "cluster/demo edited"
    assert json.loads(admin.ok("get", "cluster", "demo", "-o", "json"))["spec"]["version"] == "1.30.5"
    assert "no changes" in admin.ok("edit", "cluster", "demo", env={"EDITOR": "true"})


def test_watch_prints_changes_until_its_timeout(admin: Platform) -> None:
    admin.ok("create", "-f", admin.write("marker.yaml", CLUSTER.replace("name: demo", "name: marker")))
    # Long enough for the calls below on a loaded machine; the test waits it out.
    watcher = subprocess.Popen(
        [TKECTL, "watch", "clusters", "-o", "json", "--timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"HOME": str(admin.home), "TKECONFIG": str(admin.config), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        # Each pipe has one reader (these threads): a second one, communicate(), would take
        # lines the test is waiting for.
        out, err = Lines(watcher.stdout), Lines(watcher.stderr)
        # The existing object comes first: from here on the watch is established.
        assert json.loads(out.next())["object"]["metadata"]["name"] == "marker"
        admin.ok("create", "-f", admin.write("cluster.yaml", CLUSTER))
        admin.ok("delete", "cluster", "demo")
        watcher.wait(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err.rest()
    events = [json.loads(line) for line in out.rest()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "demo"), ("DELETED", "demo")]


def test_pools_bindings_and_allocations_from_ipamd(admin: Platform) -> None:
    pool = admin.write(
        "pool.yaml", "kind: Pool\nname: net-a\ncidr: 10.0.1.0/24\nlabels: {zone: a}\nnodeSubnets: [192.168.0.0/16]\n"
    )
    assert admin.ok("create", "-f", pool).strip() == "pool/net-a created"
    rows = admin.ok("get", "pools", "-l", "zone=a").splitlines()
    assert rows[0].split()[:5] == ["NAME", "CIDR", "CAPACITY", "ALLOCATED", "COOLING"]
    assert rows[1].split()[:4] == ["net-a", "10.0.1.0/24", "253", "0"]
    assert admin.ok("apply", "-f", pool).strip() == "pool/net-a unchanged"
    changed = admin.run("apply", "-f", admin.write("pool2.yaml", "kind: Pool\nname: net-a\ncidr: 10.0.2.0/24\n"))
    assert changed.returncode == 4 and "cannot change a pool" in changed.stderr

    binding = admin.write(
        "binding.yaml",
        "kind: Binding\nworkload: {namespace: default, kind: StatefulSet, name: web}\npool: net-a\n"
        "releasePolicy: RELEASE_POLICY_IMMUTABLE\n",
    )
    assert admin.ok("apply", "-f", binding).strip() == "binding/default/StatefulSet/web created"
    assert admin.ok("apply", "-f", binding).strip() == "binding/default/StatefulSet/web unchanged"
    got = yaml.safe_load(admin.ok("get", "binding", "default/StatefulSet/web", "-o", "yaml"))
    assert got["pool"] == "net-a" and got["releasePolicy"] == "RELEASE_POLICY_IMMUTABLE"
    assert admin.run("get", "allocations", "--pool", "net-a").returncode == 0
    assert admin.run("get", "allocation", "net-a/10.0.1.9").returncode == 3
    assert admin.ok("delete", "binding", "default/StatefulSet/web").strip() == "binding/default/StatefulSet/web deleted"
    assert admin.ok("delete", "pool", "net-a").strip() == "pool/net-a deleted"
    assert admin.run("get", "pool", "net-a").returncode == 3


def test_users_roles_and_bindings(admin: Platform) -> None:
    user = admin.write(
        "alice.yaml",
        "kind: User\nmetadata: {name: alice, tenantId: team-a}\nspec: {groups: [ops]}\n"
        "password: alice's long password\n",
    )
    assert admin.ok("create", "-f", user).strip() == "user/alice created"
    binding = admin.write(
        "rb.yaml",
        "kind: RoleBinding\nmetadata: {name: alice-viewer}\nspec:\n  role: viewer\n"
        "  subjects: [{kind: User, name: alice}]\n",
    )
    assert admin.ok("apply", "-f", binding, "-n", "team-a").strip() == "rolebinding/alice-viewer created"
    assert "alice-viewer" in admin.ok("get", "rolebindings", "-n", "team-a")
    role = "kind: Role\nmetadata: {name: readers}\nspec:\n  rules: [{verbs: [get, list], resources: [clusters]}]\n"
    assert admin.ok("apply", "-f", admin.write("role.yaml", role), "-n", "team-a").strip() == "role/readers created"
    wider = admin.write("role2.yaml", role.replace("[get, list]", "[get, list, watch]"))
    assert admin.ok("apply", "-f", wider, "-n", "team-a").strip() == "role/readers configured"
    assert admin.ok("apply", "-f", wider, "-n", "team-a").strip() == "role/readers unchanged"
    assert "get,list,watch clusters" in admin.ok("get", "roles", "-n", "team-a")
    assert "alice" in admin.ok("get", "users", "-n", "team-a")
    off = admin.write(
        "alice-off.yaml",
        "kind: User\nmetadata: {name: alice, tenantId: team-a}\nspec: {groups: [ops], disabled: true}\n",
    )
    assert admin.ok("apply", "-f", off).strip() == "user/alice configured"
    assert " true " in admin.ok("get", "user", "alice", "-n", "team-a")
    assert admin.ok("apply", "-f", user).strip() == "user/alice configured"  # enabled again
    admin.ok("create", "-f", admin.write("cluster.yaml", CLUSTER), "-n", "team-a")

    admin.ok("config", "set-context", "alice", "--server", admin.api, "--use")
    admin.ok("login", "-u", "alice", "--password-stdin", stdin="alice's long password\n")

    def listed() -> subprocess.CompletedProcess[str] | None:
        """The role binding reaches the authorizer's cache through a watch."""
        result = admin.run("get", "clusters")
        return result if result.returncode == 0 else None

    result = wait_until(listed, what="alice listing clusters")
    assert "demo" in result.stdout
    denied = admin.run("delete", "cluster", "demo")
    assert denied.returncode == 5 and "PERMISSION_DENIED" in denied.stderr


def test_describe_prints_an_annotation_on_its_own_line(admin: Platform) -> None:
    # A tenant's annotation with line breaks printed as it came added lines of its own to what
    # an operator reads: a second "Tenant:", a "Phase:" describe never prints.
    forged = "x\nTenant:           platform\nPhase:            Running\u2028\u0085end"
    path = admin.write(
        "annotated.yaml", CLUSTER.replace("labels: {env: dev}", f"annotations: {{note: {json.dumps(forged)}}}")
    )
    admin.ok("create", "-f", path)
    lines = admin.ok("describe", "cluster", "demo").split("\n")
    assert [line for line in lines if line.startswith("Tenant:")] == ["Tenant:           default"]
    assert not [line for line in lines if line.startswith("Phase:")]
    annotations = next(line for line in lines if line.startswith("Annotations:"))
    assert annotations.endswith("note=x\\nTenant:           platform\\nPhase:            Running\\u2028\\u0085end")
    # The object itself keeps the value: -o yaml quotes it, and it reads back the same.
    assert yaml.safe_load(admin.ok("get", "cluster", "demo", "-o", "yaml"))["metadata"]["annotations"] == {
        "note": forged
    }


def test_tables_show_a_bidirectional_override_as_its_escape(admin: Platform) -> None:
    # An event's message is anyone's text: U+202E reversed the rest of its row on a terminal
    # that shows right-to-left text, and hid or reordered what an operator read.
    admin.ok("create", "-f", admin.write("cluster.yaml", CLUSTER))
    event = (
        "kind: Event\nmetadata: {name: e1}\n"
        "spec: {involvedObject: {kind: Cluster, name: demo}, reason: Noted, type: EVENT_TYPE_WARNING,\n"
        '       message: "fine \\u202edeliated\\u2066 \\u200bhidden"}\n'
    )
    admin.ok("create", "-f", admin.write("event.yaml", event))
    for out in (admin.ok("get", "events"), admin.ok("describe", "cluster", "demo")):
        row = next(line for line in out.splitlines() if "Noted" in line)
        assert row.endswith("fine \\u202edeliated\\u2066 \\u200bhidden"), row
        assert row.isprintable()
    as_yaml = yaml.safe_load(admin.ok("get", "event", "e1", "-o", "yaml"))
    assert as_yaml["spec"]["message"] == "fine \u202edeliated\u2066 \u200bhidden"
