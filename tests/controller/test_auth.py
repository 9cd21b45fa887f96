"""The controller authenticates to the apiserver like any client: with its bearer token it
lists, watches and writes across tenants (a platform administrator); with a wrong token it
gets nowhere, and says so in its log, without touching anything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.apiserver import cluster, local_config, start, stop
from tests.support.controller import RecordingProvider, controller_config
from tests.support.waiting import wait_for
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.controller.client import ApiserverConfig
from tke.internal.controller.manager import Controller
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2

pytestmark = pytest.mark.timeout(60)


async def test_the_controller_acts_with_its_token_and_nothing_without_it(
    etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("ctl-token,tke-controller,u-ctl,tke:platform-admins,system\nalice-token,alice,u-a,dev,team-a\n")
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})],
        authorizers=[PluginConfig("allow-all")],
    )
    api = await start(local_config(etcd_config, auth=auth))
    try:
        clusters, _ = api.channel_with("alice-token")
        await clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("team-cluster", type="recording")))
        provider = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=1)

        async def run(token: str) -> asyncio.Task[None]:
            monkeypatch.setenv("TKE_TEST_CONTROLLER_TOKEN", token)
            config = controller_config(api.address, etcd_config)
            config = replace(
                config, apiserver=ApiserverConfig(address=api.address, token_env="TKE_TEST_CONTROLLER_TOKEN")
            )
            controller = Controller(config, cluster_providers={"recording": provider})
            return asyncio.create_task(controller.run())

        async def phase() -> int:
            got = await clusters.Get(cluster_pb2.GetClusterRequest(name="team-cluster"))
            return int(got.status.phase)

        with caplog.at_level(logging.WARNING):
            wrong = await run("not-a-token")
            await wait_for(lambda: "UNAUTHENTICATED" in caplog.text, what="the apiserver refusing the controller")
            wrong.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await wrong
        assert await phase() == cluster_pb2.CLUSTER_PHASE_UNSPECIFIED
        assert "UNAUTHENTICATED" in caplog.text
        assert "Traceback" not in caplog.text

        right = await run("ctl-token")
        try:

            async def running() -> bool:
                return await phase() == cluster_pb2.CLUSTER_PHASE_RUNNING

            await wait_for(running)
        finally:
            right.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await right
    finally:
        await stop(api)
