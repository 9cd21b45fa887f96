"""`tkectl watch` survives an apiserver restart: it resumes from the last revision it saw, so
the changes made meanwhile arrive once, and nothing seen before is repeated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from tests.support.apiserver import ThreadedApiserver, local_config
from tests.support.ports import free_port
from tke.internal.rpc.server import ListenConfig
from tke.internal.storage.etcd import EtcdConfig

from .conftest import TKECTL

CLUSTER = """\
kind: Cluster
metadata: {name: NAME}
spec: {type: baremetal, version: 1.30.2, network: {podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12}}
"""


def tkectl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TKECONFIG": str(home / "config")}
    return subprocess.run([TKECTL, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def create(home: Path, server: str, name: str) -> None:
    path = home / f"{name}.yaml"
    path.write_text(CLUSTER.replace("NAME", name))
    result = tkectl(home, "create", "-f", str(path), "--server", server)
    assert result.returncode == 0, result.stderr


def test_watch_resumes_after_an_apiserver_restart(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    port = free_port()
    server = f"127.0.0.1:{port}"
    config = replace(local_config(etcd_config), listen=ListenConfig(address=server))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "TKECONFIG": str(tmp_path / "c")}
    watcher: subprocess.Popen[str] | None = None
    try:
        with ThreadedApiserver(config):
            create(tmp_path, server, "before")
            watcher = subprocess.Popen(
                [TKECTL, "watch", "clusters", "-o", "json", "--timeout", "45", "--server", server],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert watcher.stdout is not None
            first = json.loads(watcher.stdout.readline())
            assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "before")
        time.sleep(1.0)  # the watcher sees the server gone and retries
        with ThreadedApiserver(config):
            create(tmp_path, server, "after")
            second = json.loads(watcher.stdout.readline())
            assert (second["type"], second["object"]["metadata"]["name"]) == ("ADDED", "after")
        watcher.send_signal(signal.SIGINT)
        _, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 0, err
        assert "resuming from resource_version" in err and "Traceback" not in err
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
            watcher.wait()
