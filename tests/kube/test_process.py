"""The stand-in as a process (`python -m tests.support.kube`), as `make demo-cluster` starts it
inside a simulated machine: kube-apiserver's flags, a static token file, a serving certificate
and a client CA; it says when it is ready, serves, and stops on SIGTERM."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import REPO
from tests.support.pki import TestCA

pytestmark = pytest.mark.timeout(60)


def test_the_stand_in_runs_as_a_process(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    serving = ca.issue("apiserver", common_name="kube-apiserver", hosts=("127.0.0.1",))
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('demo-token,demo-admin,1,"system:masters"\n')
    ready_file = tmp_path / "ready"
    command = [
        sys.executable, "-m", "tests.support.kube", "--secure-port", "0", "--tls-cert-file", serving.cert_file,
        "--tls-private-key-file", serving.key_file, "--client-ca-file", ca.ca_file, "--token-auth-file", str(tokens),
        "--kubernetes-version", "1.31.1", "--ready-file", str(ready_file),
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until it serves (or exits: then it is empty)
        assert line.startswith("ready https://127.0.0.1:"), proc.stderr.read() if proc.stderr else line
        url = line.split()[1]
        assert ready_file.read_text().strip() == url
        trust = ssl.create_default_context(cafile=ca.ca_file)
        with httpx.Client(base_url=url, verify=trust, headers={"Authorization": "Bearer demo-token"}) as c:
            assert c.get("/readyz").text == "ok"
            assert c.get("/version").json()["gitVersion"] == "v1.31.1"
            assert c.get("/api/v1/namespaces/kube-system").json()["status"]["phase"] == "Active"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_unsupported_version_is_refused(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    serving = ca.issue("apiserver", common_name="kube-apiserver", hosts=("127.0.0.1",))
    command = [
        sys.executable, "-m", "tests.support.kube", "--tls-cert-file", serving.cert_file,
        "--tls-private-key-file", serving.key_file, "--kubernetes-version", "1.12.0",
    ]  # fmt: skip
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == "kube stand-in: kubernetes-validate has no schemas for Kubernetes 1.12.0"
