"""Security model: a tenant's clusters cannot take down the shared tke-controller.

The tenant is cluster-admin of their cluster, and chooses an imported cluster's URL: its API
server can answer anything, at any pace. Against a hostile HTTPS server, what one call may cost
this process stays bounded: a response's body (`max_response_bytes` of the cluster API's
options), a list's pages (`max_list_items`), a watch event that never ends its line (the peak
RSS growth is measured, with a large margin); a response sent a byte at a time ends by the
request's deadline (`request_timeout`); JSON nested too deeply is an answer that is not JSON,
never a RecursionError, and JSON of another shape a TemporaryError, never a TypeError; a
server's message reaches conditions and events as one line of
printable text, clipped; and what a Node's kubelet writes reaches a Machine's status bounded and
printable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Node

from tests.security.hostile import MEMORY_BOUND, Context, MiB, PeakGrowth, assert_reported, failed_step
from tests.support.hostile_kube import HostileKube, hostile_kube
from tests.support.kube import objects
from tests.support.kube.running import running
from tke.internal.provider.clusterapi import KubeClusterAPI
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import node_status
from tke.internal.provider.kube.access import ClusterAccess, from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import machine_pb2

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[HostileKube]:
    with hostile_kube(tmp_path / "kube") as server:
        yield server


def api(server: HostileKube, **options: float) -> ClusterAPI:
    return ClusterAPI(ClusterAccess(server.url, ca_pem=server.ca_pem), **options)  # type: ignore[arg-type]


async def test_a_huge_response_is_cut_at_the_response_limit(kube: HostileKube) -> None:
    kube.mode, kube.size = "huge", 512 * MiB
    async with api(kube) as client:
        too_large = r"more than 67108864 bytes .*max_response_bytes"
        with PeakGrowth() as growth, pytest.raises(PermanentError, match=too_large):
            await client.nodes()
        with pytest.raises(PermanentError, match="max_response_bytes"):
            await client.node("n")
    assert growth.bytes < MEMORY_BOUND, f"grew by {growth.bytes // MiB} MiB"


async def test_a_watch_event_that_never_ends_its_line_is_cut_at_the_response_limit(kube: HostileKube) -> None:
    kube.mode, kube.size = "endless", 512 * MiB
    async with api(kube) as client:
        with PeakGrowth() as growth, pytest.raises(PermanentError, match="watch event of more than 67108864 bytes"):
            async for _ in client.watch(Node):
                pass
    assert growth.bytes < MEMORY_BOUND, f"grew by {growth.bytes // MiB} MiB"


async def test_a_watch_answered_with_a_huge_error_is_cut_at_the_response_limit(kube: HostileKube) -> None:
    kube.mode, kube.size, kube.code = "huge", 512 * MiB, 500
    async with api(kube) as client:
        with (
            PeakGrowth() as growth,
            pytest.raises(PermanentError, match=r"more than 67108864 bytes .*max_response_bytes"),
        ):
            async for _ in client.watch(Node):
                pass
    assert growth.bytes < MEMORY_BOUND, f"grew by {growth.bytes // MiB} MiB"


async def test_a_list_whose_pages_never_end_is_cut_at_the_item_limit(kube: HostileKube) -> None:
    kube.mode, kube.size = "pages", 100  # 50,000 Nodes
    async with api(kube) as client:
        with pytest.raises(PermanentError, match=r"listed more than 10000 objects .*max_list_items"):
            await client.nodes()


async def test_a_response_sent_a_byte_at_a_time_ends_by_the_request_timeout(kube: HostileKube) -> None:
    kube.mode = "trickle"
    async with api(kube, timeout=2.0, request_timeout=3.0) as client:
        # The guard only keeps a failing test from running for days (a byte every half second
        # never trips the 2 s read timeout).
        async with asyncio.timeout(120):
            with pytest.raises(TemporaryError, match=r"did not end within 3s .*request_timeout"):
                await client.version()


async def test_json_nested_too_deeply_is_an_answer_that_is_not_json(kube: HostileKube) -> None:
    kube.mode, kube.size = "deep", 100_000
    async with api(kube) as client:
        with pytest.raises(TemporaryError, match="nested too deeply"):
            await client.nodes()
        with pytest.raises(TemporaryError, match="nested too deeply"):
            async for _ in client.watch(Node):
                pass


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2, 3]",
        b'{"kind": "Node", "apiVersion": "v1", "metadata": [1]}',
        b'{"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n"}, "status": "up"}',
        b'{"kind": "NodeList", "apiVersion": "v1", "metadata": "x", "items": [1, "a"]}',
        b'{"kind": "Node", "apiVersion": "v1", "status": {"conditions": [{"lastTransitionTime": 12}]}}',
    ],
)
async def test_json_of_another_shape_is_a_temporary_error_not_a_traceback(kube: HostileKube, body: bytes) -> None:
    kube.mode, kube.body = "body", body
    async with api(kube) as client:
        cluster_api = KubeClusterAPI(client, drain_poll=1.0)
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: cluster_api.node("n"),
            client.nodes,
            lambda: cluster_api.rollout("DaemonSet", "kube-system", "ds"),
        ]
        refused = 0
        for call in calls:
            try:
                await call()  # an answer, or a TemporaryError: never a library's TypeError
            except TemporaryError as err:
                assert "answered JSON that is not the Kubernetes object asked for" in str(err)
                refused += 1
        assert refused


NODE_INFO = ("machineID", "systemUUID", "bootID", "kernelVersion", "osImage", "containerRuntimeVersion",
             "kubeletVersion", "kubeProxyVersion", "operatingSystem", "architecture")  # fmt: skip


async def test_a_node_of_any_field_types_makes_a_machine_status_of_strings(kube: HostileKube) -> None:
    kube.mode = "body"
    kube.body = json.dumps(
        {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {"name": "n", "labels": {"node-role.kubernetes.io/x": 1}},
            "status": {
                "nodeInfo": dict.fromkeys(NODE_INFO, 7),
                "addresses": [{"type": 1, "address": [2]}],
                "conditions": [{"type": "Ready", "status": [1], "reason": {"a": 1}, "message": 7}],
            },
        }
    ).encode()
    async with api(kube) as client:
        node = await client.node("n")
    assert node is not None
    status = machine_pb2.MachineStatus()
    report = node_status.write_machine_status(node, status)
    assert (status.node_info.os_image, status.addresses[0].address) == ("7", "[2]")
    ready = next(c for c in status.conditions if c.type == "NodeReady")
    assert (ready.status, ready.reason, ready.message) == (meta_pb2.CONDITION_STATUS_UNKNOWN, "{'a': 1}", "7")
    assert not report.ready and report.kubelet_version == "7"


async def test_an_api_servers_message_reaches_conditions_as_one_clipped_line(kube: HostileKube) -> None:
    kube.mode, kube.size, kube.status = "status", 10 * MiB, 503

    async def hostile(ctx: Context) -> None:
        async with api(kube) as client:
            await client.node("n")

    assert_reported(*await failed_step(hostile), "get Node n: \\x1b[2J\\x1b]0;owned\\x07\\nERROR forged")


async def test_what_a_nodes_kubelet_writes_reaches_the_machines_status_bounded_and_printable(tmp_path: Path) -> None:
    # The Node is written by the tenant's kubelet: dozens of conditions with long messages
    # and terminal escapes, a flood of addresses, a 100 kB OS image.
    hostile = objects.node("worker-1")
    hostile["status"]["nodeInfo"]["osImage"] = "\x1b[2J" + "x" * 100_000
    hostile["status"]["nodeInfo"]["kubeletVersion"] = "v1.30.2\x1b[2J" + "9" * 100_000
    hostile["status"]["addresses"] += [{"type": "ExternalIP", "address": f"192.0.2.{i}"} for i in range(200)]
    hostile["status"]["conditions"] += [
        {"type": f"Hostile{i}", "status": "True", "reason": "Owned", "message": "\x1b]0;owned\x07\n" + "m" * 20_000}
        for i in range(60)  # 1.2 MB: a real API server stores objects up to 1.5 MiB
    ]
    with running(tmp_path / "kube") as kube:
        access = from_kubeconfig(kube.kubeconfig(user="admin", groups=("system:masters",)))
        async with ClusterAPI(access) as admin:
            await admin.client.create(from_dict(hostile))
            node = await admin.node("worker-1")
    assert node is not None
    status = machine_pb2.MachineStatus()
    report = node_status.write_machine_status(node, status)
    assert status.ByteSize() < 64 * 1024, status.ByteSize()  # it was 1.3 MB, past tke-apiserver's 1 MiB object limit
    assert len(status.conditions) == node_status.MAX_CONDITIONS and len(status.addresses) <= 17
    texts = [status.node_info.os_image] + [c.message for c in status.conditions] + [report.ready_reason]
    assert all(t.isprintable() for t in texts)
    assert status.node_info.os_image.startswith("\\x1b[2Jxxx")
    assert report.kubelet_version.startswith("v1.30.2\\x1b[2J999") and len(report.kubelet_version) <= 256
    assert report.ready and next(c for c in status.conditions if c.type == "NodeReady").reason == "KubeletReady"
