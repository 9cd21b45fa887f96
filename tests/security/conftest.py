"""The security suite's fixture: the private cloud's platform (built-in accounts, policy centre,
audit file) on a fresh key prefix of the session's etcd, with its root administrator logged in.

Each test plays a hostile tenant: it tries an attack, checks that it is refused with the right
code and details and that nothing changed, and checks that the legitimate action still works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.platform import Platform, environment, private_cloud, start_platform, stop_platform
from tke.internal.storage.etcd import EtcdConfig


@pytest.fixture
async def platform(etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Platform]:
    for key, value in environment().items():
        monkeypatch.setenv(key, value)
    audit = tmp_path / "audit.jsonl"
    running = await start_platform(private_cloud(etcd_config, audit), audit)
    try:
        yield running
    finally:
        await stop_platform(running)
