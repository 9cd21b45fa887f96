"""Security model: a tenant's clusters cannot take down the shared tke-controller.

The tenant is cluster-admin of their cluster, and chooses an imported cluster's URL: its API
server can answer anything, at any pace. Against a hostile HTTPS server, what one call may cost
this process stays bounded: a response's body (`max_response_bytes` of the cluster API's
options), a list's pages (`max_list_items`), a watch event that never ends its line (the peak
RSS growth is measured, with a large margin); a response sent a byte at a time ends by the
request's deadline (`request_timeout`); JSON nested too deeply is an answer that is not JSON,
never a RecursionError; and a server's message reaches conditions and events as one line of
printable text, clipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube.resources.core_v1 import Node

from tests.security.hostile import MEMORY_BOUND, Context, MiB, PeakGrowth, assert_reported, failed_step
from tests.support.hostile_kube import HostileKube, hostile_kube
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.kube.api import ClusterAPI

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


async def test_an_api_servers_message_reaches_conditions_as_one_clipped_line(kube: HostileKube) -> None:
    kube.mode, kube.size, kube.status = "status", 10 * MiB, 503

    async def hostile(ctx: Context) -> None:
        async with api(kube) as client:
            await client.node("n")

    assert_reported(*await failed_step(hostile), "get Node n: \\x1b[2J\\x1b]0;owned\\x07\\nERROR forged")
