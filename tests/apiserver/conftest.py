"""The apiserver fixture: an in-process tke-apiserver backed by the session's real etcd, with a
fresh key prefix per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.apiserver import READ_PATHS, Running, local_config, start, stop
from tke.internal.storage.etcd import EtcdConfig


@pytest.fixture
async def api(etcd_config: EtcdConfig) -> AsyncIterator[Running]:
    running = await start(local_config(etcd_config))
    try:
        yield running
    finally:
        await stop(running)


@pytest.fixture(params=READ_PATHS)
async def read_api(request: pytest.FixtureRequest, etcd_config: EtcdConfig) -> AsyncIterator[Running]:
    """The apiserver with Get and List answered by the watch cache, and with them read from
    etcd (`watch_cache = false`): the read tests run against both, with the same results."""
    running = await start(local_config(etcd_config, watch_cache=request.param == "watch-cache"))
    try:
        yield running
    finally:
        await stop(running)
