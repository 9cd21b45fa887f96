"""Fixtures of the AWS tests: moto's server for the session (reset before every test), the
AWS environment variables of a test account (no file or metadata service is read), and an
in-process apiserver over the session's etcd."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.apiserver import Running, local_config, start, stop
from tests.support.aws import ENV, Moto, moto_server
from tke.internal.storage.etcd import EtcdConfig


@pytest.fixture(scope="session")
def moto_session() -> Iterator[Moto]:
    with moto_server() as moto:
        yield moto


@pytest.fixture
def moto(moto_session: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    moto_session.reset()
    return moto_session


@pytest.fixture
async def api(etcd_config: EtcdConfig) -> AsyncIterator[Running]:
    running = await start(local_config(etcd_config))
    try:
        yield running
    finally:
        await stop(running)
