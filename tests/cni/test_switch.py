"""cni-switch run as a runtime runs it, delegating to Debian's plugins in real namespaces."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.support.cni import (
    Runtime,
    addresses,
    bridge_network,
    leases,
    link_names,
    links,
    netns_path,
    reachable,
    record_dir,
    sh,
    switch_config,
    unique,
    with_prev,
)
from tests.support.waiting import wait_until


def two_networks(tmp_path: Path, **extra: object) -> dict[str, object]:
    return switch_config(
        tmp_path,
        {
            "bridge": bridge_network(tmp_path, "10.70.0.0/24", name="pods"),
            "fixed": bridge_network(tmp_path, "10.71.0.0/24", name="fixed-pods", version=None),
        },
        "bridge",
        **extra,
    )


def test_version(switch: Runtime) -> None:
    out = switch.run("VERSION", {"cniVersion": "1.0.0"}).ok()
    assert out == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]}
    assert switch.run("VERSION", b"").ok()["cniVersion"] == "1.1.0"


def test_add_check_del(switch: Runtime, namespaces: Callable[[], str], tmp_path: Path) -> None:
    conf = two_networks(tmp_path)
    ns = namespaces()
    cid = unique("c")
    result = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns)).ok()

    assert result["cniVersion"] == "1.1.0"
    [ip] = result["ips"]
    assert ip["address"].startswith("10.70.0.") and ip["gateway"] == "10.70.0.1"
    sandbox = result["interfaces"][ip["interface"]]
    assert sandbox == {**sandbox, "name": "eth0", "sandbox": netns_path(ns)}
    assert addresses(ns, "eth0") == [ip["address"]]
    record = json.loads((record_dir(tmp_path) / f"{cid}=eth0.json").read_text())
    assert record["phase"] == "added" and record["network"]["key"] == "bridge"

    check = switch.run("CHECK", with_prev(conf, result), container_id=cid, netns=netns_path(ns))
    assert check.code == 0 and check.stdout == ""

    assert switch.run("DEL", with_prev(conf, result), container_id=cid, netns=netns_path(ns)).code == 0
    assert "eth0" not in link_names(ns)
    assert leases(tmp_path, "pods") == set()
    assert list(record_dir(tmp_path).iterdir()) == []
    again = switch.run("DEL", conf, container_id=cid, netns=netns_path(ns))
    assert again.code == 0 and again.stdout == ""


def test_two_pods_reach_each_other_on_the_bridge(
    switch: Runtime, namespaces: Callable[[], str], tmp_path: Path
) -> None:
    conf = two_networks(tmp_path)
    a, b = namespaces(), namespaces()
    ra = switch.run("ADD", conf, container_id=unique("a"), netns=netns_path(a)).ok()
    rb = switch.run("ADD", conf, container_id=unique("b"), netns=netns_path(b)).ok()
    addr_b = rb["ips"][0]["address"].split("/")[0]
    assert ra["ips"][0]["address"] != rb["ips"][0]["address"]
    assert reachable(a, b, addr_b)


def test_explicit_network_and_del_follows_the_record(
    switch: Runtime, namespaces: Callable[[], str], tmp_path: Path
) -> None:
    conf = two_networks(tmp_path)
    ns = namespaces()
    cid = unique("c")
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=db-0;TKE_NETWORK=fixed"
    result = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args=args).ok()
    assert result["ips"][0]["address"].startswith("10.71.0.")
    assert leases(tmp_path, "fixed-pods") == {result["ips"][0]["address"].split("/")[0]}

    # DEL without the CNI_ARGS choice and without prevResult still reaches "fixed".
    assert switch.run("DEL", conf, container_id=cid, netns=netns_path(ns)).code == 0
    assert leases(tmp_path, "fixed-pods") == set()
    assert "eth0" not in link_names(ns)


def test_macvlan_network(switch: Runtime, namespaces: Callable[[], str], tmp_path: Path) -> None:
    master = unique("tm")
    # A veth end as the parent (this kernel has no dummy module); it dies with the node namespace.
    sh("ip", "-n", switch.node, "link", "add", master, "type", "veth", "peer", "name", master + "p")
    sh("ip", "-n", switch.node, "link", "set", master, "up")
    macvlan = {
        "cniVersion": "1.0.0",
        "name": "mv",
        "type": "macvlan",
        "master": master,
        "mode": "bridge",
        "ipam": {"type": "host-local", "dataDir": str(tmp_path / "leases"), "ranges": [[{"subnet": "10.72.0.0/24"}]]},
    }
    conf = switch_config(tmp_path, {"bridge": bridge_network(tmp_path, "10.70.0.0/24"), "mv": macvlan}, "bridge")
    ns = namespaces()
    cid = unique("c")
    result = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args="TKE_NETWORK=mv").ok()
    [eth0] = [link for link in links(ns) if link["ifname"] == "eth0"]
    assert eth0["linkinfo"]["info_kind"] == "macvlan"
    assert addresses(ns, "eth0") == [result["ips"][0]["address"]]
    assert switch.run("DEL", conf, container_id=cid, netns=netns_path(ns)).code == 0
    assert "eth0" not in link_names(ns)


def test_del_after_the_namespace_is_gone(switch: Runtime, tmp_path: Path) -> None:
    conf = two_networks(tmp_path)
    ns = unique("tkc")
    sh("ip", "netns", "add", ns)
    try:
        cid = unique("c")
        switch.run("ADD", conf, container_id=cid, netns=netns_path(ns)).ok()
        assert len(leases(tmp_path, "pods")) == 1
    finally:
        sh("ip", "netns", "del", ns, check=False)
    assert switch.run("DEL", conf, container_id=cid, netns=netns_path(ns)).code == 0
    assert switch.run("DEL", conf, container_id=cid, netns="").code == 0
    assert leases(tmp_path, "pods") == set()


def test_del_with_the_record_gone_releases_what_it_can(
    switch: Runtime, namespaces: Callable[[], str], tmp_path: Path
) -> None:
    conf = two_networks(tmp_path)
    ns = namespaces()
    cid = unique("c")
    switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args="TKE_NETWORK=fixed").ok()
    (record_dir(tmp_path) / f"{cid}=eth0.json").unlink()
    assert switch.run("DEL", conf, container_id=cid, netns=netns_path(ns)).code == 0
    assert leases(tmp_path, "fixed-pods") == set()
    assert "eth0" not in link_names(ns)


def test_failed_add_is_undone(switch: Runtime, namespaces: Callable[[], str], tmp_path: Path) -> None:
    broken = bridge_network(tmp_path, "10.73.0.0/24", name="broken")
    broken["plugins"].append({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.no_such_key": "1"}})
    conf = switch_config(tmp_path, {"broken": broken}, "broken")
    ns = namespaces()
    cid = unique("c")
    before = link_names(switch.node)
    out = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns))
    assert out.code == 1
    error = out.json
    assert error["cniVersion"] == "1.1.0" and error["code"] == 999 and "no_such_key" in error["msg"]
    assert "undone" in out.stderr
    assert "eth0" not in link_names(ns)
    assert link_names(switch.node) - before <= {broken["plugins"][0]["bridge"]}  # no veth left
    assert leases(tmp_path, "broken") == set()
    assert list(record_dir(tmp_path).iterdir()) == []


def node_state(tmp_path: Path, node: str, ns: str) -> dict[str, object]:
    """What a container's attachment consists of: cni-switch's records (bytes), host-local's
    leases, the container's interfaces and addresses, the node's links."""
    return {
        "records": {p.name: p.read_bytes() for p in record_dir(tmp_path).iterdir()},
        "leases": (leases(tmp_path, "pods"), leases(tmp_path, "fixed-pods")),
        "eth0": addresses(ns, "eth0"),
        "container links": link_names(ns),
        "node links": link_names(node),
    }


def test_a_refused_add_changes_nothing_of_an_existing_attachment(
    switch: Runtime, namespaces: Callable[[], str], tmp_path: Path
) -> None:
    """Bad input, or a second ADD without DEL, for a container that is attached: a clear error
    and the attachment exactly as it was (it used to be DELeted first: record, interface and
    address gone, then the error)."""
    extra = tmp_path / "extra-bin"
    extra.mkdir()
    called = tmp_path / "oldie-called"
    oldie = extra / "oldie"  # speaks only versions cni-switch cannot convert to
    oldie.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        'if [ "$CNI_COMMAND" = VERSION ]; then echo \'{"cniVersion":"0.2.0","supportedVersions":["0.1.0","0.2.0"]}\'; '
        f"else touch {called}; exit 1; fi\n"
    )
    oldie.chmod(0o755)
    run = Runtime(binary=switch.binary, node=switch.node, path=[str(extra), *switch.path])
    networks = {
        "bridge": bridge_network(tmp_path, "10.70.0.0/24", name="pods"),
        "fixed": bridge_network(tmp_path, "10.71.0.0/24", name="fixed-pods"),
        "ghost": {"type": "no-such-plugin"},
        "old": {"type": "oldie"},
    }
    conf = switch_config(tmp_path, networks, "bridge")
    ns, cid = namespaces(), unique("c")
    result = run.run("ADD", conf, container_id=cid, netns=netns_path(ns)).ok()
    before = node_state(tmp_path, run.node, ns)
    assert before["eth0"] == [result["ips"][0]["address"]] and before["records"]

    pod = "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=db-0"
    no_ipamd = {**conf, "ipamd": {"address": str(tmp_path / "no-ipamd.sock"), "timeout": 1}}
    unreadable = {**conf, "networks": {**networks, "bridge": "missing-file"}, "confDir": str(tmp_path)}
    refusals = [
        ("an unknown TKE_NETWORK", conf, "TKE_NETWORK=nope", 4, "unknown network 'nope'"),
        ("a network whose plugin is missing", conf, "TKE_NETWORK=ghost", 7, "no-such-plugin"),
        ("a network whose plugin speaks no usable version", conf, "TKE_NETWORK=old", 1, "supports no version"),
        ("a binding tke-ipamd cannot be asked for", no_ipamd, pod, 11, "binding"),
        ("an unreadable network file", unreadable, "", 7, "cannot read"),
        ("the same ADD again, without DEL", conf, "", 104, "already attached to network bridge (added)"),
        ("an ADD onto another network, without DEL", conf, "TKE_NETWORK=fixed", 104, "DEL it before"),
    ]
    for what, config, args, code, says in refusals:
        out = run.run("ADD", config, container_id=cid, netns=netns_path(ns), args=args)
        assert out.code == 1 and out.json["code"] == code and says in out.json["msg"] + out.json.get("details", ""), (
            what,
            out,
        )
        assert node_state(tmp_path, run.node, ns) == before, what
    assert not called.exists()

    # The attachment still works as recorded: CHECK passes, DEL removes all of it.
    assert run.run("CHECK", with_prev(conf, result), container_id=cid, netns=netns_path(ns)).code == 0
    assert run.run("DEL", conf, container_id=cid, netns=netns_path(ns)).code == 0
    assert addresses(ns, "eth0") == [] and leases(tmp_path, "pods") == set()
    assert not list(record_dir(tmp_path).iterdir())
    assert run.run("ADD", conf, container_id=cid, netns=netns_path(ns)).code == 0  # after DEL, ADD again


def test_delegate_error_passes_through(switch: Runtime, namespaces: Callable[[], str], tmp_path: Path) -> None:
    tiny = bridge_network(tmp_path, "10.74.0.0/30", name="tiny")  # one usable address
    conf = switch_config(tmp_path, {"tiny": tiny}, "tiny")
    switch.run("ADD", conf, container_id=unique("a"), netns=netns_path(namespaces())).ok()
    out = switch.run("ADD", conf, container_id=unique("b"), netns=netns_path(namespaces()))
    assert out.code == 1
    assert "no IP addresses available" in out.json["msg"]


def test_version_negotiation(switch: Runtime, namespaces: Callable[[], str], tmp_path: Path) -> None:
    # The delegate network claims 1.1.0 and cni-switch is called at 1.1.0: bridge (<= 1.0.0)
    # still gets 1.0.0. Called at 1.0.0, the result says 1.0.0.
    net = bridge_network(tmp_path, "10.75.0.0/24", name="v11", version="1.1.0")
    conf = switch_config(tmp_path, {"v11": net}, "v11")
    ns = namespaces()
    assert switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(ns)).ok()["cniVersion"] == "1.1.0"
    conf10 = {**conf, "cniVersion": "1.0.0"}
    out = switch.run("ADD", conf10, container_id=unique("c"), netns=netns_path(namespaces())).ok()
    assert out["cniVersion"] == "1.0.0"
    old = switch.run("ADD", {**conf, "cniVersion": "0.4.0"}, container_id=unique("c"), netns=netns_path(ns))
    assert old.code == 1 and old.json["code"] == 1 and old.json["cniVersion"] == "0.4.0"


def test_gc_deletes_attachments_the_runtime_no_longer_lists(
    switch: Runtime, namespaces: Callable[[], str], tmp_path: Path
) -> None:
    conf = two_networks(tmp_path)
    keep, stale = unique("keep"), unique("stale")
    rk = switch.run("ADD", conf, container_id=keep, netns=netns_path(namespaces())).ok()
    stale_ns = namespaces()
    switch.run("ADD", conf, container_id=stale, netns=netns_path(stale_ns), args="TKE_NETWORK=fixed").ok()
    gc = {**conf, "cni.dev/valid-attachments": [{"containerID": keep, "ifname": "eth0"}]}
    out = switch.run("GC", gc, drop=("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"))
    assert out.code == 0 and out.stdout == "", out.stderr
    assert leases(tmp_path, "fixed-pods") == set()
    assert leases(tmp_path, "pods") == {rk["ips"][0]["address"].split("/")[0]}
    assert [p.name for p in record_dir(tmp_path).iterdir()] == [f"{keep}=eth0.json"]
    # GC and STATUS exist from 1.1.0 on.
    assert switch.run("GC", {**gc, "cniVersion": "1.0.0"}).json["code"] == 1


def test_status(switch: Runtime, tmp_path: Path) -> None:
    conf = two_networks(tmp_path)
    out = switch.run("STATUS", conf, drop=("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"))
    assert out.code == 0 and out.stdout == ""
    missing = switch_config(tmp_path, {"x": {"type": "no-such-plugin"}}, "x")
    out = switch.run("STATUS", missing)
    assert out.code == 1 and out.json["code"] == 50 and "no-such-plugin" in out.json["msg"]


def test_ipamd_unreachable_for_a_pod_is_try_again_later(
    switch: Runtime, namespaces: Callable[[], str], tmp_path: Path
) -> None:
    conf = two_networks(tmp_path, ipamd={"address": str(tmp_path / "no-ipamd.sock"), "timeout": 1})
    ns = namespaces()
    pod = "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=db-0"
    out = switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(ns), args=pod)
    assert out.code == 1 and out.json["code"] == 11
    assert "eth0" not in link_names(ns) and not list(record_dir(tmp_path).glob("*.json"))
    # No pod identity (a plain runtime) or an explicit choice needs no binding.
    assert switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(ns)).code == 0
    explicit = f"{pod};TKE_NETWORK=fixed"
    assert (
        switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(ns), args=explicit, ifname="net1").code == 0
    )


def test_errors(switch: Runtime, namespaces: Callable[[], str], tmp_path: Path) -> None:
    conf = two_networks(tmp_path)
    ns = netns_path(namespaces())

    def code(command: str, config: object, **kw: object) -> int:
        out = switch.run(command, config, **kw)  # type: ignore[arg-type]
        assert out.code != 0 and out.json["msg"], out
        return int(out.json["code"])

    assert code("ADD", b"{not json", container_id="c1", netns=ns) == 6
    assert code("ADD", b"[1, 2]", container_id="c1", netns=ns) == 6
    assert code("ADD", conf, container_id="", netns=ns) == 4
    assert code("ADD", conf, container_id="c1", netns="") == 4
    assert code("ADD", conf, container_id="c1", netns=ns, ifname="") == 4
    assert code("ADD", conf, container_id="c1", netns=ns, drop=("CNI_PATH",)) == 4
    assert code("DEL", conf, container_id="", netns=ns) == 4
    assert code("ADD", conf, container_id="bad/id", netns=ns) == 4
    assert code("ADD", conf, container_id="c1", netns=ns, ifname="a-very-long-ifname") == 4
    assert code("FROB", conf, container_id="c1", netns=ns) == 4
    assert code("ADD", conf, drop=("CNI_COMMAND",)) == 4
    assert code("ADD", conf, container_id="c1", netns=ns, args="TKE_NETWORK=nope") == 4
    assert code("ADD", conf, container_id="c1", netns=ns, args="garbage") == 4
    assert code("ADD", {k: v for k, v in conf.items() if k != "cniVersion"}, container_id="c1", netns=ns) == 7
    assert code("ADD", {**conf, "cniVersion": "2.0.0"}, container_id="c1", netns=ns) == 1
    assert code("ADD", {**conf, "networks": {}}, container_id="c1", netns=ns) == 7
    assert code("ADD", {**conf, "defaultNetwork": "nope"}, container_id="c1", netns=ns) == 7
    file_ref = {**conf, "networks": {"bridge": "missing-file"}, "confDir": str(tmp_path)}
    assert code("ADD", file_ref, container_id="c1", netns=ns) == 7
    no_plugin = switch_config(tmp_path, {"x": {"type": "no-such-plugin"}}, "x")
    assert code("ADD", no_plugin, container_id="c1", netns=ns) == 7
    assert code("CHECK", with_prev(conf, {"cniVersion": "1.1.0"}), container_id="never-added", netns=ns) == 3
    assert code("GC", {**conf, "cni.dev/valid-attachments": "all"}) == 7
    assert not list(record_dir(tmp_path).glob("*.json"))


def test_networks_from_the_configuration_directory(
    switch: Runtime, namespaces: Callable[[], str], tmp_path: Path
) -> None:
    confdir = tmp_path / "net.d"
    confdir.mkdir()
    (confdir / "pods.conflist").write_text(json.dumps(bridge_network(tmp_path, "10.76.0.0/24", name="pods")))
    single = bridge_network(tmp_path, "10.77.0.0/24", name="single")["plugins"][0]
    (confdir / "single.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "single", **single}))
    conf = switch_config(tmp_path, {"pods": "pods", "single": "single.conf"}, "pods", confDir=str(confdir))
    ns = namespaces()
    assert (
        switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(ns))
        .ok()["ips"][0]["address"]
        .startswith("10.76.0.")
    )
    out = switch.run(
        "ADD", conf, container_id=unique("c"), netns=netns_path(ns), ifname="net1", args="TKE_NETWORK=single"
    )
    assert out.ok()["ips"][0]["address"].startswith("10.77.0.")


def test_concurrent_adds_and_dels(switch: Runtime, namespaces: Callable[[], str], tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    conf = two_networks(tmp_path)
    pods = [(unique("c"), namespaces()) for _ in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda p: switch.run("ADD", conf, container_id=p[0], netns=netns_path(p[1])), pods))
    addresses_given = [r.ok()["ips"][0]["address"] for r in results]
    assert len(set(addresses_given)) == len(pods)
    assert len(list(record_dir(tmp_path).glob("*.json"))) == len(pods)
    assert json.loads((tmp_path / "state" / "plugin-versions.json").read_text())  # one readable cache
    with ThreadPoolExecutor(max_workers=16) as pool:
        dels = list(pool.map(lambda p: switch.run("DEL", conf, container_id=p[0], netns=netns_path(p[1])), pods))
    assert all(d.code == 0 for d in dels)
    assert leases(tmp_path, "pods") == set() and not list(record_dir(tmp_path).glob("*.json"))


def test_a_crash_in_the_middle_of_add_leaves_a_record_that_del_finishes(
    switch: Runtime, namespaces: Callable[[], str], tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess

    # A chained plugin that hangs in ADD after bridge did its part; cni-switch is killed there.
    marker = tmp_path / "hanging"
    hang = tmp_path / "hang-bin" / "hang"
    hang.parent.mkdir()
    hang.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        'case "$CNI_COMMAND" in\n'
        '  VERSION) echo \'{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}\' ;;\n'
        f"  ADD) touch {marker}; sleep 60 ;;\n"
        "esac\n"
    )
    hang.chmod(0o755)
    net = bridge_network(tmp_path, "10.78.0.0/24", name="crashy")
    net["plugins"].append({"type": "hang"})
    conf = switch_config(tmp_path, {"crashy": net}, "crashy")
    ns, cid = namespaces(), unique("c")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CNI_")},
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns_path(ns),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": os.pathsep.join([str(hang.parent), *switch.path]),
    }
    proc = subprocess.Popen(
        ["ip", "netns", "exec", switch.node, switch.binary],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(conf).encode())
        proc.stdin.close()
        wait_until(marker.exists, what="the hanging plugin running")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole invocation, as a node crash would
        proc.wait()
    record_file = record_dir(tmp_path) / f"{cid}=eth0.json"
    record = json.loads(record_file.read_text())
    assert record["phase"] == "adding" and leases(tmp_path, "crashy")
    assert addresses(ns, "eth0")  # bridge had configured the pod

    hanging_path = [str(hang.parent), *switch.path]
    crashed = Runtime(binary=switch.binary, node=switch.node, path=hanging_path)
    # ADD again without the DEL the specification requires after a failed ADD: refused, and
    # the half-done attachment stays for that DEL.
    marker.unlink()
    kept = (record_file.read_bytes(), addresses(ns, "eth0"), leases(tmp_path, "crashy"))
    again = crashed.run("ADD", conf, container_id=cid, netns=netns_path(ns))
    assert again.code == 1 and again.json["code"] == 104 and "(adding)" in again.json["msg"], again
    assert (record_file.read_bytes(), addresses(ns, "eth0"), leases(tmp_path, "crashy")) == kept
    assert not marker.exists()
    assert crashed.run("DEL", conf, container_id=cid, netns=netns_path(ns)).code == 0
    assert "eth0" not in link_names(ns) and leases(tmp_path, "crashy") == set()
    assert not list(record_dir(tmp_path).glob("*.json"))
