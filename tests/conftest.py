"""Shared fixtures: a real etcd server on a free loopback port for the whole session, and a
fresh key prefix per test so tests never see each other's data."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.etcd import EtcdProcess
from tke.internal.storage.etcd import EtcdConfig, EtcdStore


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """One etcd for the session. Tests that stop or kill etcd start their own instead."""
    server = EtcdProcess(Path(tmp_path_factory.mktemp("etcd")) / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def etcd_config(etcd: EtcdProcess, etcd_prefix: str) -> EtcdConfig:
    return EtcdConfig(endpoints=[etcd.endpoint], prefix=etcd_prefix)


@pytest.fixture
async def store(etcd_config: EtcdConfig) -> AsyncIterator[EtcdStore]:
    s = EtcdStore(etcd_config)
    try:
        yield s
    finally:
        await s.close()
