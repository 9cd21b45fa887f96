"""Security model: a tenant's clusters cannot take down the shared tke-controller.

The tenant is cluster-admin of their cluster, and chooses an imported cluster's URL: its API
server can answer anything. Against a hostile HTTPS server, a server's message reaches
conditions and events as one line of printable text, clipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.hostile import Context, MiB, assert_reported, failed_step
from tests.support.hostile_kube import HostileKube, hostile_kube
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.kube.api import ClusterAPI

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[HostileKube]:
    with hostile_kube(tmp_path / "kube") as server:
        yield server


def api(server: HostileKube, **options: float) -> ClusterAPI:
    return ClusterAPI(ClusterAccess(server.url, ca_pem=server.ca_pem), **options)  # type: ignore[arg-type]


async def test_an_api_servers_message_reaches_conditions_as_one_clipped_line(kube: HostileKube) -> None:
    kube.mode, kube.size, kube.status = "status", 10 * MiB, 503

    async def hostile(ctx: Context) -> None:
        async with api(kube) as client:
            await client.node("n")

    assert_reported(*await failed_step(hostile), "get Node n: \\x1b[2J\\x1b]0;owned\\x07\\nERROR forged")
