"""Fixtures of the controller tests: an in-process apiserver over the session's real etcd
(fresh key prefix per test), and a place for their files."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.apiserver import Running, local_config, start, stop
from tke.internal.storage.etcd import EtcdConfig


@pytest.fixture
async def api(etcd_config: EtcdConfig) -> AsyncIterator[Running]:
    running = await start(local_config(etcd_config))
    try:
        yield running
    finally:
        await stop(running)
