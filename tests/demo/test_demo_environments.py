"""`make demo-environments`, end to end: its whole flow (the platform, moto's EC2, a meta
cluster, two sshd machines) creates a baremetal, an aws and a hosted cluster with a baremetal
worker in two tenants, all reach Running, and what it prints shows them and the EC2 instance
with its tags; then nothing it started is left running."""

from __future__ import annotations

import io
import os
import re
import socket
from pathlib import Path

import pytest

from tests.support.demo import environments

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]


async def test_one_platform_runs_clusters_in_three_environments_for_two_tenants(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the demo needs root (sshd); run the suite as root, as CI does")
    out = io.StringIO()
    status = await environments.flow(out, tmp_path, within=240)
    text = out.getvalue()
    assert status == 0, text
    assert "all Running after" in text
    team_a, team_b = text.split("$ tkectl -n team-a get clusters,machines")[1].split("$ tkectl -n team-b get")
    assert "cluster/onprem" in team_a and "baremetal" in team_a and "cloud" not in team_a
    for line in ("cluster/cloud", "cluster/managed", "machine/managed-worker-1"):
        row = next(r for r in team_b.splitlines() if r.startswith(line))
        assert "RUNNING" in row, row
    ec2 = text.split("EC2 instances in moto (")[1]
    assert "running" in ec2 and "tke.cloud/tenant=team-b" in ec2 and "tke.cloud/cluster=cloud" in ec2
    assert "stopped everything it started" in text
    # What it started is gone: tke-apiserver's and moto's ports answer no more.
    api = re.search(r"tke-apiserver at (\S+);", text)
    moto = re.search(r"moto's EC2 at http://(\S+) ", text)
    assert api is not None and moto is not None
    for address in (api.group(1), moto.group(1)):
        host, _, port = address.rpartition(":")
        with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=2):
            pass
