"""cni-switch running a delegate's tke-ipamc itself (tke.internal.cni.switch.inline): the delegate
gets Debian's `static` IPAM plugin with the address cni-switch allocated from a real tke-ipamd,
so an ADD+DEL starts no tke-ipamc process; the result is the one tke-ipamc's path gives; a
failed ADD, DEL, CHECK and GC keep tke-ipamc's rules; without cni-switch's `ipamd` or without
static, the delegate runs tke-ipamc as before.

The plugins run through wrappers that log every start (name and verb), so the tests count the
Python processes a verb starts instead of timing anything."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.cni import (
    DEBIAN_CNI,
    IpamdDaemon,
    Runtime,
    addresses,
    console_script,
    ipamc_network,
    link_names,
    netns_path,
    record_dir,
    running_ipamd,
    switch_config,
    unique,
    with_prev,
)
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

POD = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=p-{};TKE_NETWORK=fixed"
NO_IDS = ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")


class Starts:
    """A CNI bin directory whose cni-switch and tke-ipamc log each start before they run."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.folder = str(folder)
        self.log = folder / "starts.log"
        for name in ("cni-switch", "tke-ipamc"):
            wrapper = folder / name
            wrapper.write_text(f'#!/bin/sh\necho "{name} $CNI_COMMAND" >> {self.log}\nexec {console_script(name)}\n')
            wrapper.chmod(0o755)

    def take(self) -> list[str]:
        """The starts since the last call."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return lines


@pytest.fixture
def starts(tmp_path: Path) -> Starts:
    return Starts(tmp_path / "bin")


@pytest.fixture
def switch(node: str, starts: Starts) -> Runtime:
    return Runtime(binary=f"{starts.folder}/cni-switch", node=node, path=[starts.folder, DEBIAN_CNI])


@pytest.fixture
def ipamd(etcd_config: EtcdConfig) -> Iterator[IpamdDaemon]:
    """tke-ipamd as a node's (node_name "node-1", the node ipamc_network names)."""
    with running_ipamd(list(etcd_config.endpoints), etcd_config.prefix, 'node_name = "node-1"') as daemon:
        yield daemon


@pytest.fixture
def admin(ipamd: IpamdDaemon) -> Iterator[Any]:
    """Pool `fixed`: one address, with a gateway, routes and DNS for the results to carry."""
    with grpc.insecure_channel(f"unix:{ipamd.socket}") as channel:
        stub = ipam_pb2_grpc.IPAMServiceStub(channel)
        stub.CreatePool(
            ipam_pb2.CreatePoolRequest(
                pool=ipam_pb2.Pool(
                    name="fixed",
                    cidr="10.82.0.0/24",
                    gateway="10.82.0.1",
                    ranges=[ipam_pb2.IPRange(start="10.82.0.7", end="10.82.0.7")],
                    routes=[ipam_pb2.Route(dst="0.0.0.0/0"), ipam_pb2.Route(dst="10.99.0.0/16", gw="10.82.0.254")],
                    dns=ipam_pb2.DNS(nameservers=["10.82.0.2"], domain="shop.local", search=["shop.svc"]),
                )
            ),
            timeout=10,
        )
        yield stub


def held(admin: Any, cid: str) -> str:
    """The address ipamd holds for `cid`/eth0 ('' for none)."""
    try:
        return str(
            admin.GetAllocation(
                ipam_pb2.GetAllocationRequest(attachment=ipam_pb2.Attachment(container_id=cid, ifname="eth0")),
                timeout=10,
            ).ip
        )
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
        return ""


def config(ipamd: IpamdDaemon, tmp_path: Path, *, switch_ipamd: bool = True, **ipam: Any) -> dict[str, Any]:
    fixed = ipamc_network("fixed-ip", unique("tf"), ipamd.socket, tmp_path, pool="fixed", **ipam)
    extra = {"ipamd": {"address": ipamd.socket, "timeout": 10}} if switch_ipamd else {}
    return switch_config(tmp_path, {"fixed": fixed}, "fixed", **extra)


def queued(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "ipamc" / "releases").glob("*.json"))


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what differs between two attachments of one container namespace: the
    node-side veth's name and the MAC addresses."""
    out: dict[str, Any] = json.loads(json.dumps(result))
    for interface in out.get("interfaces", []):
        interface.pop("mac", None)
        if "sandbox" not in interface and interface.get("name", "").startswith("veth"):
            interface["name"] = "veth"
    return out


def test_add_and_del_start_no_tke_ipamc(  # noqa: PLR0917 - pytest fixtures
    switch: Runtime, starts: Starts, namespaces: Callable[[], str], ipamd: IpamdDaemon, admin: Any, tmp_path: Path
) -> None:
    conf = config(ipamd, tmp_path)
    ns, cid = namespaces(), unique("c")
    result = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args=POD.format(1)).ok()
    assert result["ips"][0]["address"] == "10.82.0.7/24" and addresses(ns, "eth0") == ["10.82.0.7/24"]
    assert held(admin, cid) == "10.82.0.7"
    assert starts.take() == ["cni-switch ADD"]  # the delegate ran static, not tke-ipamc

    # CHECK still asks ipamd, as tke-ipamc's CHECK did.
    assert switch.run("CHECK", with_prev(conf, result), container_id=cid, netns=netns_path(ns)).code == 0
    admin.Release(ipam_pb2.ReleaseRequest(container_id=cid, ifname="eth0"), timeout=10)
    out = switch.run("CHECK", with_prev(conf, result), container_id=cid, netns=netns_path(ns))
    assert out.code == 1 and out.json["code"] == 3 and "no allocation" in out.json["msg"], out
    assert starts.take() == ["cni-switch CHECK"] * 2

    again = unique("c")
    switch.run("ADD", conf, container_id=again, netns=netns_path(namespaces()), args=POD.format(2)).ok()
    assert switch.run("DEL", conf, container_id=again, netns=netns_path(ns), args=POD.format(2)).code == 0
    assert held(admin, again) == ""
    assert starts.take() == ["cni-switch ADD", "cni-switch DEL"]


def test_the_result_is_the_one_tke_ipamcs_path_gives(  # noqa: PLR0917 - pytest fixtures
    switch: Runtime, starts: Starts, namespaces: Callable[[], str], ipamd: IpamdDaemon, admin: Any, tmp_path: Path
) -> None:
    """The same network, container and address through both paths: without cni-switch's `ipamd`
    the delegate runs tke-ipamc (today's path), with it cni-switch allocates and bridge runs static."""
    with_ipamd = config(ipamd, tmp_path)
    delegated = {**with_ipamd}
    del delegated["ipamd"]
    ns, cid = namespaces(), unique("c")
    results = []
    for conf in (delegated, with_ipamd):
        out = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args=POD.format(1))
        results.append(out.ok())
        assert switch.run("DEL", conf, container_id=cid, netns=netns_path(ns), args=POD.format(1)).code == 0
        assert held(admin, cid) == ""
    assert starts.take() == [
        *("cni-switch ADD", "tke-ipamc ADD", "cni-switch DEL", "tke-ipamc DEL"),
        *("cni-switch ADD", "cni-switch DEL"),
    ]
    old, new = results
    assert old["ips"] == [{"address": "10.82.0.7/24", "gateway": "10.82.0.1", "interface": 2}], old
    assert old["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16", "gw": "10.82.0.254"}], old
    assert comparable(new) == comparable(old)


def test_without_static_the_delegate_runs_tke_ipamc(  # noqa: PLR0917 - pytest fixtures
    node: str, starts: Starts, namespaces: Callable[[], str], ipamd: IpamdDaemon, admin: Any, tmp_path: Path
) -> None:
    debian = tmp_path / "debian-without-static"
    debian.mkdir()
    for name in os.listdir(DEBIAN_CNI):
        if name != "static":
            (debian / name).symlink_to(os.path.join(DEBIAN_CNI, name))
    switch = Runtime(binary=f"{starts.folder}/cni-switch", node=node, path=[starts.folder, str(debian)])
    conf = config(ipamd, tmp_path)
    ns, cid = namespaces(), unique("c")
    out = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args=POD.format(1))
    assert out.ok()["ips"][0]["address"] == "10.82.0.7/24"
    assert "tke-ipamc runs in the delegate (no usable static IPAM plugin" in out.stderr
    assert switch.run("DEL", conf, container_id=cid, netns=netns_path(ns), args=POD.format(1)).code == 0
    assert held(admin, cid) == ""
    assert starts.take() == ["cni-switch ADD", "tke-ipamc ADD", "cni-switch DEL", "tke-ipamc DEL"]


def test_a_failed_add_releases_and_the_del_after_it_releases_nothing_again(  # noqa: PLR0917 - pytest fixtures
    switch: Runtime, starts: Starts, namespaces: Callable[[], str], ipamd: IpamdDaemon, admin: Any, tmp_path: Path
) -> None:
    """A chained plugin fails the ADD after bridge configured the allocated address, and its DEL
    fails too: the undo releases the address (bridge's DEL succeeded) but must keep the record;
    the runtime's DEL that finishes the attachment must not release a second time (with ipamd
    down, such a release would be queued)."""
    fixed = tmp_path / "flaky-fixed"
    flaky = Path(switch.path[0]) / "flaky"
    flaky.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        'case "$CNI_COMMAND" in\n'
        '  VERSION) echo \'{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}\' ;;\n'
        '  ADD) echo \'{"code":999,"msg":"flaky ADD"}\'; exit 1 ;;\n'
        f'  DEL) [ -e {fixed} ] || {{ echo \'{{"code":999,"msg":"flaky DEL"}}\'; exit 1; }} ;;\n'
        "esac\n"
    )
    flaky.chmod(0o755)
    conf = config(ipamd, tmp_path)
    conf["networks"]["fixed"]["plugins"].append({"type": "flaky"})
    ns, cid = namespaces(), unique("c")
    out = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args=POD.format(1))
    assert out.code == 1 and out.json["code"] == 999 and out.json["msg"] == "flaky ADD", out
    assert "eth0" not in link_names(ns)  # bridge's DEL ran
    assert held(admin, cid) == ""  # released by the undo
    record = json.loads((record_dir(tmp_path) / f"{cid}=eth0.json").read_text())
    assert (record["phase"], record["ipam"]) == ("adding", "released")

    ipamd.stop()
    fixed.touch()
    out = switch.run("DEL", conf, container_id=cid, netns=netns_path(ns), args=POD.format(1))
    assert out.code == 0, out
    assert "queued" not in out.stderr and queued(tmp_path) == []
    assert not list(record_dir(tmp_path).glob("*.json"))
    assert [s.split()[0] for s in starts.take()] == ["cni-switch", "cni-switch"]


def test_a_failed_allocation_changes_nothing_and_says_why(
    switch: Runtime, namespaces: Callable[[], str], ipamd: IpamdDaemon, admin: Any, tmp_path: Path
) -> None:
    conf = config(ipamd, tmp_path)
    first = unique("c")
    switch.run("ADD", conf, container_id=first, netns=netns_path(namespaces()), args=POD.format(1)).ok()
    ns, cid = namespaces(), unique("c")
    out = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args=POD.format(2))
    assert out.code == 1 and out.json["code"] == 102 and "no free address" in out.json["msg"], out
    assert "eth0" not in link_names(ns) and not (record_dir(tmp_path) / f"{cid}=eth0.json").exists()
    # ipamd's refusal, with its reason, reaches msg: a node this node's ipamd does not act for.
    other = json.loads(json.dumps(conf))
    other["networks"]["fixed"]["plugins"][0]["ipam"]["node"] = "node-2"
    out = switch.run("ADD", other, container_id=cid, netns=netns_path(ns), args=POD.format(2))
    assert out.code == 1 and out.json["code"] == 103, out
    assert "denied it (NODE_RESTRICTED): " in out.json["msg"] and "'node-2'" in out.json["msg"], out
    assert "eth0" not in link_names(ns) and not (record_dir(tmp_path) / f"{cid}=eth0.json").exists()
    # The same ADD on an attachment that has a record: 104, and its address stays.
    out = switch.run("ADD", conf, container_id=first, netns=netns_path(namespaces()), args=POD.format(1))
    assert out.code == 1 and out.json["code"] == 104, out
    assert held(admin, first) == "10.82.0.7"


def test_gc_releases_the_leases_of_attachments_no_longer_valid(  # noqa: PLR0917 - pytest fixtures
    switch: Runtime, starts: Starts, namespaces: Callable[[], str], ipamd: IpamdDaemon, admin: Any, tmp_path: Path
) -> None:
    admin.CreatePool(
        ipam_pb2.CreatePoolRequest(
            pool=ipam_pb2.Pool(
                name="more", cidr="10.83.0.0/24", ranges=[ipam_pb2.IPRange(start="10.83.0.10", end="10.83.0.20")]
            )
        ),
        timeout=10,
    )
    conf = config(ipamd, tmp_path, gcMinAgeSeconds=0)
    conf["networks"]["fixed"]["plugins"][0]["ipam"]["pool"] = "more"
    keep, stale, lost = unique("keep"), unique("stale"), unique("lost")
    for i, cid in enumerate((keep, stale, lost)):
        switch.run("ADD", conf, container_id=cid, netns=netns_path(namespaces()), args=POD.format(i)).ok()
        assert held(admin, cid)
    # `lost`: its record is gone (ipamd's GarbageCollect is what finds its lease).
    (record_dir(tmp_path) / f"{lost}=eth0.json").unlink()
    starts.take()
    gc = {**conf, "cni.dev/valid-attachments": [{"containerID": keep, "ifname": "eth0"}]}
    out = switch.run("GC", gc, drop=NO_IDS)
    assert out.code == 0 and out.stdout == "", out
    assert held(admin, keep) and held(admin, stale) == "" and held(admin, lost) == ""
    assert [p.name for p in record_dir(tmp_path).iterdir()] == [f"{keep}=eth0.json"]
    assert starts.take() == ["cni-switch GC"]


def test_status_asks_ipamd_without_starting_tke_ipamc(
    switch: Runtime, starts: Starts, ipamd: IpamdDaemon, tmp_path: Path
) -> None:
    """Runtimes ask STATUS every few seconds: cni-switch asks ipamd's health itself, as
    tke-ipamc's STATUS did, with the same answer when ipamd is gone (code 50)."""
    conf = config(ipamd, tmp_path)
    out = switch.run("STATUS", conf, drop=NO_IDS)
    assert out.code == 0 and out.stdout == "", out
    assert starts.take() == ["cni-switch STATUS"]
    ipamd.stop()
    out = switch.run("STATUS", conf, drop=NO_IDS)
    assert out.code == 1 and out.json["code"] == 50, out
    assert starts.take() == ["cni-switch STATUS"]
