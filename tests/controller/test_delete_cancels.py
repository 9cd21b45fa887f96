"""Deleting an object while one of its create steps runs cancels that step and goes on with the
teardown at once, instead of waiting for the step to end (a hung install command may take up to
its time limit, an hour, and the object keeps its machines and quota meanwhile).

Real sshd machines play the hosts. The step that hangs is an install profile's command
(`sleep 3600` under a command time limit of an hour, in a step whose own timeout is an hour),
so a delete that waited for it would not finish within any of these tests' waits: each test
fails without the cancellation, whatever the machine's speed. The hung command must also be
ended on the machine (sshd leaves a non-interactive session's processes running when its
connection closes), and the teardown must run after the partial create.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.apiserver import Running, cluster
from tests.support.controller import RecordingProvider, controller_config, credentials_published
from tests.support.sshd import Machines, SSHServer, ssh_machines
from tests.support.waiting import wait_for
from tke.internal.controller.manager import Controller
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.provider.ssh import SSHOptions
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, event_pb2, event_pb2_grpc, machine_pb2

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

HOUR = 3600.0
NODE_NAME = 'echo "node-$(echo "$SSH_CONNECTION" | cut -d" " -f3 | tr . -)"'
# The install command that hangs: it records its process id (the shell `exec`s sleep, so the
# id is the sleep's) and sleeps for an hour.
HUNG = 'echo $$ > "$TKE_ROOT/hung.pid"; exec sleep 3600'
# What the teardown runs instead of kubeadm reset (this host has no kubeadm): a mark it ran.
RESET = 'touch "$TKE_ROOT/reset-ran"'
PROFILES = {"default": {"modules": [], "prepare_commands": [HUNG]}}
COMMON = {"node_name_command": NODE_NAME, "command_timeout": HOUR, "profiles": PROFILES}


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    with ssh_machines(tmp_path / "ssh", 2) as m:
        yield m


@contextlib.asynccontextmanager
async def controller(
    api: Running, etcd_config: EtcdConfig, m: Machines, cluster_providers: dict[str, Any] | None = None
) -> AsyncIterator[Controller]:
    config = controller_config(
        api.address,
        etcd_config,
        credentials={"default/test-key": CredentialConfig(private_key_file=str(m.key.private_key_file))},
        ssh=SSHOptions(known_hosts_file=str(m.known_hosts), connect_attempts=2, connect_timeout=5),
        cluster_providers={
            "baremetal": ProviderConfig(
                options={**COMMON, "root_dir": m.root_dir, "preflight_commands": ["true"], "teardown_commands": [RESET]}
            ),
        },
        machine_providers={
            "baremetal": ProviderConfig(
                options={**COMMON, "root_dir": m.root_dir, "preflight_commands": ["true"], "reset_commands": [RESET]}
            ),
        },
    )
    c = Controller(config, cluster_providers=cluster_providers)
    task = asyncio.create_task(c.run())
    try:
        await credentials_published(etcd_config, "default/test-key")
        yield c
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def hung_command(m: Machines, server: SSHServer) -> int:
    """The process id of the hung install command on `server`, once it runs."""
    pid_file = m.root_of(server) / "hung.pid"

    def started() -> int | None:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        return int(text) if text and alive(int(text)) else None

    return await wait_for(started, what="the hung install command to start")


async def gone(get: Any) -> bool:
    try:
        await get()
    except grpc.aio.AioRpcError as err:
        return err.code() == grpc.StatusCode.NOT_FOUND
    return False


async def events_of(api: Running, kind: str, name: str, *reasons: str) -> list[tuple[str, str]]:
    """The object's events (reason, message), once there is one of each of `reasons` (the
    controller records events in the background)."""
    stub = event_pb2_grpc.EventServiceStub(api.channel)

    async def recorded() -> list[tuple[str, str]] | None:
        listed = await stub.List(event_pb2.ListEventsRequest(involved_object_kind=kind, involved_object_name=name))
        out = [(e.spec.reason, e.spec.message) for e in listed.items]
        return out if set(reasons) <= {r for r, _ in out} else None

    return await wait_for(recorded, what=f"events {reasons} of {kind} {name}")


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.exc_info and r.name.startswith("tke")]
    assert not logged, [r.getMessage() for r in logged]


async def test_deleting_a_machine_cancels_its_hung_install_and_tears_down_what_it_made(
    api: Running, etcd_config: EtcdConfig, machines: Machines, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tke")
    node, master = machines.servers
    recording = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=1)
    c = cluster("c1", type="recording")
    c.spec.machines.add(ip=master.host, ssh_port=master.port, credential_ref="test-key")
    m = machine_pb2.Machine()
    m.metadata.name = "w1"
    m.spec.cluster_name = "c1"
    m.spec.type = "baremetal"
    m.spec.ip, m.spec.ssh_port, m.spec.credential_ref = node.host, node.port, "test-key"
    m.spec.role = machine_pb2.MACHINE_ROLE_WORKER

    async with controller(api, etcd_config, machines, {"recording": recording}):
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
        await api.machines.Create(machine_pb2.CreateMachineRequest(machine=m))
        pid = await hung_command(machines, node)
        current = await api.machines.Get(machine_pb2.GetMachineRequest(name="w1"))
        assert [(x.type, x.reason) for x in current.status.conditions][-1] == ("PrepareNode", "Running")

        await api.machines.Delete(machine_pb2.DeleteMachineRequest(name="w1"))
        # The step would hang for an hour: the machine is gone only if it was cancelled.
        await wait_for(lambda: gone(lambda: api.machines.Get(machine_pb2.GetMachineRequest(name="w1"))))
        assert (machines.root_of(node) / "reset-ran").exists()  # ResetNode ran after the partial create
        # ... and the command that hung was ended on the machine, not left to its hour.
        await wait_for(lambda: not alive(pid), what="the hung command to be ended on the machine")
        reasons = await events_of(api, "Machine", "w1", "StepCancelled", "Deleted")

    assert ("StepCancelled", "step PrepareNode cancelled: the machine is being deleted") in reasons, reasons
    assert ("Deleted", "teardown finished; finalizer removed") in reasons, reasons
    lines = [r.getMessage() for r in caplog.records if "cancelled" in r.getMessage()]
    assert any("default/w1: step PrepareNode cancelled: the machine is being deleted" in x for x in lines), lines
    no_tracebacks(caplog)


async def test_deleting_a_cluster_cancels_its_hung_install_and_tears_down_what_it_made(
    api: Running, etcd_config: EtcdConfig, machines: Machines, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tke")
    master = machines.servers[0]
    c = cluster("c2", type="baremetal")
    c.spec.version = "1.30.2"
    c.spec.machines.add(ip=master.host, ssh_port=master.port, credential_ref="test-key")

    async with controller(api, etcd_config, machines):
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
        pid = await hung_command(machines, master)
        await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="c2"))
        await wait_for(lambda: gone(lambda: api.clusters.Get(cluster_pb2.GetClusterRequest(name="c2"))))
        assert (machines.root_of(master) / "reset-ran").exists()  # Teardown ran after the partial create
        await wait_for(lambda: not alive(pid), what="the hung command to be ended on the machine")
        reasons = await events_of(api, "Cluster", "c2", "StepCancelled", "Deleted")

    assert ("StepCancelled", "step PrepareMachines cancelled: the cluster is being deleted") in reasons, reasons
    assert ("Deleted", "teardown finished; finalizer removed") in reasons, reasons
    no_tracebacks(caplog)
