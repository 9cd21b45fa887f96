"""The example configurations under deploy/cni are valid: every cni-switch network resolves
(inline or from the configuration directory) and every tke-ipamc section parses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tke.internal.cni.ipamc.config import IpamcConfig
from tke.internal.cni.switch.config import SwitchConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "cni"


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*.conflist")))
def test_example_is_valid(name: str) -> None:
    conflist = json.loads((DEPLOY / name).read_text())
    assert conflist["cniVersion"] == "1.0.0"  # runtimes without 1.1 (podman 4) read it too
    [plugin] = conflist["plugins"]
    assert plugin["type"] == "cni-switch"
    config = SwitchConfig.from_json({**plugin, "name": conflist["name"], "cniVersion": conflist["cniVersion"]})
    config = config.replace(conf_dir=str(DEPLOY / "tke.d"))
    for key in config.networks:
        network = config.network(key)
        for delegate in network.plugins:
            ipam = delegate.get("ipam", {})
            if ipam.get("type") == "tke-ipamc":
                IpamcConfig.from_network(delegate, {"TKE_NODE_NAME": "node-1"})


def test_install_node_writes_working_launchers(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "CNI_BIN_DIR": str(tmp_path / "bin"),
        "CNI_CONF_DIR": str(tmp_path / "net.d"),
    }
    conf = DEPLOY / "10-tke-bridge.conflist"
    subprocess.run([str(DEPLOY / "install-node.sh"), str(conf)], env=env, check=True, capture_output=True)
    assert json.loads((tmp_path / "net.d" / conf.name).read_text()) == json.loads(conf.read_text())
    for name in ("cni-switch", "tke-ipamc"):
        out = subprocess.run(
            [str(tmp_path / "bin" / name)],
            input=b'{"cniVersion": "1.0.0"}',
            env={**env, "CNI_COMMAND": "VERSION"},
            capture_output=True,
            check=True,
        )
        assert json.loads(out.stdout) == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]}


def test_a_launcher_runs_from_a_runtime_s_bare_environment_and_ignores_the_caller_s_python(tmp_path: Path) -> None:
    """Runtimes execute plugins with little more than the CNI_* variables (no PATH, no HOME);
    whatever a caller's environment or working directory holds never changes which code a plugin
    that runs as root imports (the launcher starts isolated, without site)."""
    env = {**os.environ, "PYTHON": sys.executable, "CNI_BIN_DIR": str(tmp_path / "bin")}
    subprocess.run([str(DEPLOY / "install-node.sh")], env=env, check=True, capture_output=True)
    decoy = tmp_path / "decoy"
    for folder in (decoy / "tke" / "cmd", tmp_path / "bin" / "tke" / "cmd"):
        folder.mkdir(parents=True)
        (folder / "ipamc.py").write_text("raise SystemExit('the decoy was imported')\n")
        (folder / "cni_switch.py").write_text("raise SystemExit('the decoy was imported')\n")
    (decoy / "sitecustomize.py").write_text("raise SystemExit('sitecustomize was imported')\n")
    hostile = {"PYTHONPATH": str(decoy), "PYTHONHOME": str(decoy), "PYTHONSTARTUP": str(decoy / "x.py")}
    for name in ("cni-switch", "tke-ipamc"):
        launcher = tmp_path / "bin" / name
        assert launcher.read_text().startswith(f"#!{sys.executable} -IS\n")
        for extra in ({}, hostile):
            out = subprocess.run(
                [str(launcher)],
                input=b'{"cniVersion": "1.1.0"}',
                env={"CNI_COMMAND": "VERSION", **extra},
                cwd=decoy,
                capture_output=True,
                check=True,
            )
            assert json.loads(out.stdout) == {"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}
            assert out.stderr == b""
