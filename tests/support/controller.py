"""tke-controller for tests: configurations, a provider that records what its steps do
(in a file, so several processes can be checked together), real tke-controller processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.support import LOOPBACK_NETWORKS, REPO
from tests.support.waiting import wait_for
from tke.internal.controller.client import ApiserverConfig
from tke.internal.controller.config import ControllerConfig, LeaderConfig
from tke.internal.provider.addresses import AddressConfig
from tke.internal.provider.contract import ClusterContext
from tke.internal.provider.credentials import catalogue_key, publish_catalogue, split_name
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.store import NotFound
from tke.platform.v1 import cluster_pb2


async def publish_credentials(etcd: EtcdConfig, *names: str) -> None:
    """Publish the credential catalogue `names` ("tenant/name") as a leading tke-controller
    configured with them would: for tests that create objects naming credentials without
    running a controller."""
    store = EtcdStore(etcd)
    try:
        await publish_catalogue(store, etcd.prefix, [split_name(n) for n in names])
    finally:
        await store.close()


async def credentials_published(etcd: EtcdConfig, *names: str) -> None:
    """Wait until the leading controller has published `names` ("tenant/name"): until then
    the apiserver refuses objects that name them."""
    store = EtcdStore(etcd)

    async def present() -> bool:
        for name in names:
            try:
                await store.get(catalogue_key(etcd.prefix, *split_name(name)))
            except NotFound:
                return False
        return True

    try:
        await wait_for(present, what=f"the credential catalogue listing {names}")
    finally:
        await store.close()


def controller_config(address: str, etcd: EtcdConfig, **changes: Any) -> ControllerConfig:
    base = ControllerConfig(
        apiserver=ApiserverConfig(address=address, token_env=""),
        etcd=etcd,
        leader=LeaderConfig(ttl=3),
        workers=2,
        resync=30.0,
        health_interval=5.0,
        retry_base_delay=0.1,
        retry_max_delay=1.0,
        machines=AddressConfig(allowed_networks=LOOPBACK_NETWORKS),
    )
    return replace(base, **changes)


class RecordingProvider:
    """A cluster provider whose steps append JSON lines to `log_file`: {"pid", "cluster",
    "step", "event": start|end|fail, "t"}. Step i of `steps` sleeps `step_seconds`.
    `failures` maps a step to how many attempts fail (temporarily) before one succeeds,
    counted across processes from the log; `permanent` steps always fail permanently."""

    name = "recording"

    def __init__(
        self,
        log_file: str,
        *,
        steps: int = 3,
        step_seconds: float = 0.0,
        failures: Mapping[str, int] | None = None,
        permanent: list[str] | None = None,
        healthy: bool = True,
    ) -> None:
        self.log_file = Path(log_file)
        self.step_seconds = step_seconds
        self.failures = dict(failures or {})
        self.permanent = set(permanent or [])
        self.healthy = healthy
        self.create_steps = [Step(f"Step{i}", self._runner(f"Step{i}"), timeout=60) for i in range(1, steps + 1)]
        self.delete_steps = [Step("Teardown", self._runner("Teardown"), timeout=60)]
        self.scale_steps = [Step("ScaleOut", self._runner("ScaleOut"), timeout=60)]
        self.upgrade_steps = [Step("Upgrade", self._runner("Upgrade"), timeout=60)]

    def _write(self, cluster: str, step: str, event: str) -> None:
        line = json.dumps({"pid": os.getpid(), "cluster": cluster, "step": step, "event": event, "t": time.time()})
        with open(self.log_file, "a") as f:
            f.write(line + "\n")
            f.flush()

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.log_file)

    def _runner(self, step: str) -> Callable[[ClusterContext], Awaitable[None]]:
        async def run(ctx: ClusterContext) -> None:
            name = ctx.cluster.metadata.name
            records = read_records(self.log_file)
            attempts = sum(1 for r in records if r["cluster"] == name and r["step"] == step and r["event"] == "start")
            self._write(name, step, "start")
            await asyncio.sleep(self.step_seconds)
            if step in self.permanent:
                self._write(name, step, "fail")
                raise PermanentError(f"{step} cannot work here")
            if attempts < self.failures.get(step, 0):
                self._write(name, step, "fail")
                raise TemporaryError(f"{step} failed on purpose", delay=0.2)
            self._write(name, step, "end")

        return run

    def validate(self, cluster: cluster_pb2.Cluster) -> list[FieldViolation]:
        return []

    async def check_health(self, ctx: ClusterContext) -> str:
        if not self.healthy:
            raise TemporaryError("unhealthy on purpose")
        return "fine"


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A small TOML writer for test configurations (tables, strings, numbers, bools, lists)."""
    scalars, tables = [], []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            scalars.append(f"{key} = {_value(value)}")
    out = "\n".join(scalars) + ("\n" if scalars else "")
    for key, value in tables:
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        out += f"\n[{name}]\n" + toml(value, name)
    return out


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


class ControllerProcess:
    """A real tke-controller process (the console script's module) with a TOML config."""

    def __init__(self, directory: Path, name: str, config: Mapping[str, Any]) -> None:
        self.directory = directory
        self.name = name
        self.config_path = directory / f"{name}.toml"
        self.log_path = directory / f"{name}.log"
        self.config_path.write_text(toml(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child's for its lifetime
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tke.cmd.controller", "--config", str(self.config_path)],
            cwd=REPO,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, no resignation."""
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
