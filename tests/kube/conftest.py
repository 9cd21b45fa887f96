"""The Kubernetes API stand-in for each test, on a loopback port, with short bookmark intervals
(watch tests wait for them), and a lightkube client of a cluster administrator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.kube.rbac import User
from tests.support.kube.running import StandIn, running
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI

TOKENS = {
    "admin-token": User("token-admin", ("system:masters",), "1"),
    "viewer-token": User("viewer", ("viewers",), "2"),
}


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[StandIn]:
    with running(tmp_path / "kube", tokens=TOKENS, bookmark_interval=0.2) as standin:
        yield standin


@pytest.fixture
async def admin(kube: StandIn) -> AsyncIterator[ClusterAPI]:
    async with ClusterAPI(from_kubeconfig(kube.kubeconfig(user="admin", groups=("system:masters",)))) as api:
        yield api
