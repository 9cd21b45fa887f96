"""`make demo-cluster`, end to end (root): the demo's whole flow as the Makefile runs it, five
machines in network namespaces with their own sshd, the platform as processes, the API
stand-in behind the VIP. While the cluster is Running the test looks at what happened (the
stand-ins' calls, the cluster's API, the platform's objects); then at what the demo printed,
and that nothing it made is left."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support import processes
from tests.support.demo import run as demo_run
from tests.support.demo.machines import CONTROL_PLANE, WORKER
from tests.support.sshd import MARKER
from tests.support.waiting import wait_until
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.provider.kube.node_status import report
from tke.platform.v1 import machine_pb2, machine_pb2_grpc

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

LINE = re.compile(r"^(master|worker)-\d \((control-plane|worker)\) +\$ \S")


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the demo needs root (network namespaces, sshd on port 22); run the suite as root, as CI does")


def os_image() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    raise AssertionError("/etc/os-release has no PRETTY_NAME")


async def api_nodes(kubeconfig: str) -> list[Any]:
    async with ClusterAPI(from_kubeconfig(kubeconfig)) as api:
        return [report(n) for n in await api.nodes()]


def assert_removed(text: str, machines: list[str]) -> None:
    """Nothing the demo (whose output is `text`) made is left: its namespaces, its bridge, the
    processes of its machines' sessions, its directory."""
    directory = Path(text.split("state in ", 1)[1].split(maxsplit=1)[0])
    index = re.search(r"network namespaces on 10\.200\.(\d+)\.0/24", text)
    assert index is not None, text
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [ns for ns in namespaces.split() if ns.startswith(f"tkdemo{index.group(1)}-")]
    bridge = subprocess.run(["ip", "link", "show", f"tkdemo{index.group(1)}"], capture_output=True, check=False)
    assert bridge.returncode != 0
    for name in machines:
        assert processes.carrying(MARKER, str(directory / "machines" / f"sshd-{name}")) == []
    assert not directory.exists()
    assert re.search(r"^stopped and removed everything; \d+\.\d+s in all$", text, re.M)


def test_the_demo_installs_an_ha_cluster_and_shows_what_each_machine_ran() -> None:
    seen: dict[str, Any] = {}

    def inspect(demo: demo_run.Demo) -> None:
        ips = {m.name: m.address for m in demo.machines.machines}
        names = {v: k for k, v in ips.items()}
        world = demo.machines.world
        calls = world.calls()
        assert [c for c in calls if not c["ok"]] == []  # no stand-in refused anything
        kubeadm = [(names[c["machine"]], c) for c in calls if c["argv"][0] == "kubeadm"]

        # Exactly one init, on the first master; the other masters join after it, one at a
        # time, as control-plane machines (the stand-in made their etcd members); then the
        # workers join.
        steps = [(who, c["argv"][1]) for who, c in kubeadm if c["argv"][1] in ("init", "join")]
        assert steps[:3] == [("master-1", "init"), ("master-2", "join"), ("master-3", "join")]
        assert sorted(steps[3:]) == [("worker-1", "join"), ("worker-2", "join")]
        cluster = world.read()["cluster"]
        assert cluster["endpoint"] == f"{demo.network.vip}:8443" and cluster["init_machine"] == ips["master-1"]
        assert set(cluster["etcd"]) == {"master-1", "master-2", "master-3"}
        assert {n: v["control_plane"] for n, v in cluster["nodes"].items()} == {
            "master-1": True, "master-2": True, "master-3": True, "worker-1": False, "worker-2": False,
        }  # fmt: skip

        # Every join used a fresh bootstrap token that `kubeadm token create` made on the first
        # master just for it, before it, with the platform's TTL; the stand-in checked the
        # secret, the expiry and the CA pin against the cluster-info it fetched through the VIP.
        made = {
            c["argv"][3].split(".")[0]: (i, c["argv"])
            for i, (who, c) in enumerate(kubeadm)
            if c["argv"][1:3] == ["token", "create"] and who == "master-1"
        }
        joins = [(i, who, c) for i, (who, c) in enumerate(kubeadm) if c["argv"][1] == "join"]
        assert len({c["token_id"] for _, _, c in joins}) == len(joins) == 4
        for i, who, join in joins:
            created, argv = made[join["token_id"]]
            assert created < i
            assert argv[argv.index("--ttl") + 1] == "1800s"
            assert (ips[who] if who.startswith("master") else who) in argv[argv.index("--description") + 1]

        # The cluster's API (the stand-in, through the VIP) has every Node, registered by its
        # kubelet: Ready, the cluster's version, this host's OS image, containerd's version.
        reports = {r.name: r for r in asyncio.run(api_nodes(demo.kubeconfig.read_text()))}
        assert set(reports) == set(ips)
        assert all(r.ready and r.kubelet_version == f"v{demo_run.VERSION}" for r in reports.values())
        assert {n for n, r in reports.items() if "control-plane" in r.roles} == {"master-1", "master-2", "master-3"}
        assert {n: r.internal_ip for n, r in reports.items()} == ips

        # The platform's Machines carry what their Nodes report (nothing else knows the OS image).
        channel = demo.platform.channel()
        try:
            stub = machine_pb2_grpc.MachineServiceStub(channel)
            for m in demo.machines.of_role(WORKER):
                got = stub.Get(machine_pb2.GetMachineRequest(name=m.name))
                info = got.status.node_info
                assert info.kubelet_version == f"v{demo_run.VERSION}" and info.os_image == os_image()
                assert info.container_runtime_version == "containerd://1.7.24"
                assert ("InternalIP", m.address) in [(a.type, a.address) for a in got.status.addresses]
        except grpc.RpcError as err:
            raise AssertionError(f"MachineService/Get: {err}") from None
        finally:
            channel.close()

        seen.update(
            roots=[str(world.root_of(m.address)) for m in demo.machines.machines],
            roles={m.name: m.role for m in demo.machines.machines},
        )

    out = io.StringIO()
    status = demo_run.run(out, inspect=inspect)
    text = out.getvalue()
    assert status == 0, text
    assert re.search(r"^cluster demo Running after \d+\.\d+s$", text, re.M), text

    # tkectl get clusters,machines: the cluster and both workers Running.
    table = text.split("$ tkectl get clusters,machines\n", 1)[1]
    assert re.search(r"^cluster/demo\s+baremetal\s+1\.31\.2\s+RUNNING", table, re.M)
    for worker in ("worker-1", "worker-2"):
        assert re.search(rf"^machine/{worker}\s+demo\s+10\.200\.\d+\.\d+\s+WORKER\s+RUNNING", table, re.M)

    # What each machine ran: one command a line, with the machine's name and role, in the
    # order they ran, paths as on the machine, no secret.
    lines = text.split("What each machine ran", 1)[1].splitlines()[1:]
    lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("stopped and removed"))]
    assert lines and all(LINE.match(line) for line in lines), lines
    assert all(seen["roles"][line.split()[0]] in line.split("$")[0] for line in lines)
    assert not any(root in line for line in lines for root in seen["roots"])
    assert not any(re.search(r"[a-z0-9]{6}\.[a-z0-9]{16}", line) for line in lines)  # bootstrap tokens
    kubeadm = [(line.split()[0], line.split("$ ", 1)[1]) for line in lines if "$ kubeadm " in line]
    steps = [(who, cmd.split()[1]) for who, cmd in kubeadm if cmd.split()[1] in ("init", "join")]
    assert steps[:3] == [("master-1", "init"), ("master-2", "join"), ("master-3", "join")]
    assert sorted(steps[3:]) == [("worker-1", "join"), ("worker-2", "join")]
    assert ("master-1", "kubeadm init --config /etc/kubernetes/kubeadm-init.yaml") in kubeadm
    assert ("worker-1", "kubeadm join --config /etc/kubernetes/kubeadm-join.yaml") in kubeadm
    assert f"{CONTROL_PLANE})" in text and f"({WORKER})" in text

    assert_removed(text, list(seen["roles"]))


def test_a_demo_that_times_out_says_why_and_removes_everything() -> None:
    out = io.StringIO()
    status = demo_run.run(out, masters=1, workers=1, within=0.1)
    text = out.getvalue()
    assert status == 1, text
    assert "make demo-cluster FAILED: the cluster and its machines were not Running after 0.1s" in text
    assert "$ tkectl describe cluster demo" in text and "$ tkectl describe machines" in text
    assert "controller.log (end)" in text and "apiserver.log (end)" in text
    assert_removed(text, ["master-1", "worker-1"])


def test_an_init_that_failed_after_its_api_server_started_succeeds_when_tried_again(tmp_path: Path) -> None:
    """A failed stand-in kubeadm init keeps no state: it must stop the API stand-in it started,
    or the platform's next attempt finds port 6443 taken and the install never ends."""
    with demo_run.started(tmp_path, masters=1, workers=0) as demo:
        world = demo.machines.world
        fault = world.fault(f"register-{demo.machines.machines[0].address}")
        fault.parent.mkdir(parents=True, exist_ok=True)
        fault.touch()
        demo_run.create(demo)

        def failed_init() -> bool:
            return any(c["argv"][1] == "init" and not c["ok"] for c in world.calls("kubeadm"))

        wait_until(failed_init, within=120, what="a kubeadm init refused by the fault")
        fault.unlink()
        demo_run.wait_running(demo)
        inits = [c for c in world.calls("kubeadm") if c["argv"][1] == "init"]
        assert not inits[0]["ok"] and "fault injected" in inits[0]["error"]
        assert inits[-1]["ok"]
