"""`tkectl watch` survives an apiserver restart: it resumes from the last revision it saw, so
the changes made meanwhile arrive once, and nothing seen before is repeated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

from tests.support.apiserver import ThreadedApiserver, local_config
from tests.support.ports import free_port
from tests.support.waiting import Lines
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
            # Ctrl-C must reach it as a user's would. A suite started in the background by a
            # non-interactive shell (`make test &` in a script, some CI runners) ignores SIGINT,
            # and children inherit that: tkectl would then rightly ignore it too.
            watcher = subprocess.Popen(
                ["env", "--default-signal=INT", TKECTL, "watch", "clusters", "-o", "json", "--server", server],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert watcher.stdout is not None and watcher.stderr is not None
            out, err = Lines(watcher.stdout), Lines(watcher.stderr)
            first = json.loads(out.next())
            assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "before")
        # The server is gone: the watcher says so and retries, with the revision it saw last.
        err.next(matching=lambda line: "resuming from resource_version" in line)
        with ThreadedApiserver(local_config(etcd_config)) as elsewhere:  # a change while it is down
            create(tmp_path, f"127.0.0.1:{elsewhere.port}", "meanwhile")
        with ThreadedApiserver(config):
            create(tmp_path, server, "after")
            # Resumed, not started over: "before" is not printed again.
            for name in ("meanwhile", "after"):
                event = json.loads(out.next())
                assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", name)
            # Ctrl-C while the resumed watch streams (not while it retries against a stopped
            # server, where the outcome would depend on when the signal lands): a clean exit.
            watcher.send_signal(signal.SIGINT)
            assert watcher.wait(timeout=60) == 0, err.rest()
        assert out.rest() == [], "an event was printed twice, or one nobody made"
        assert not any("Traceback" in line for line in err.rest())
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
            watcher.wait()
