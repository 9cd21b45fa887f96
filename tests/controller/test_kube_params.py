"""Kubernetes parameter generation and step progress, as pure functions: certificates chain to
their CA with the SANs clients check, kubeconfigs parse, kubeadm configuration carries the
extra args; conditions record starts, retries, failures and resets."""

from __future__ import annotations

import datetime

from google.protobuf import timestamp_pb2

from tke.internal.controller import progress
from tke.internal.provider.kube import kubeconfig, pki
from tke.platform.v1 import cluster_pb2


def _ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def test_kubeconfigs_parse_point_at_the_server_and_carry_a_client_certificate_of_the_ca() -> None:
    ca = pki.CertificateAuthority.generate("kubernetes")
    server = kubeconfig.api_server_url("fd00::5")
    assert server == "https://[fd00::5]:6443"
    client = ca.issue("alice", orgs=("dev",), client=True, lifetime=datetime.timedelta(hours=1))
    text = kubeconfig.kubeconfig("prod", server, ca.pair.cert_pem, "alice", client)
    assert kubeconfig.servers_of(text) == [server]
    assert kubeconfig.ca_of(text) == ca.pair.cert_pem
    assert client.cert.not_valid_after_utc - client.cert.not_valid_before_utc <= datetime.timedelta(hours=1, minutes=5)
    assert kubeconfig.ca_of("not: [valid") is None


def test_progress_records_starts_retries_failures_and_resets() -> None:
    conditions = cluster_pb2.ClusterStatus().conditions
    names = ["A", "B"]
    policy = progress.RetryPolicy(max_retries=2, base_delay=1.0, max_delay=3.0)
    assert progress.next_step(names, conditions) == "A"
    progress.start(conditions, "A", 1, _ts(10))
    progress.succeed(conditions, "A", 1, _ts(11))
    assert progress.next_step(names, conditions) == "B"
    outcomes = [progress.fail(conditions, "B", "boom", _ts(12 + i), policy, permanent=False) for i in range(3)]
    assert [(o.give_up, o.delay) for o in outcomes] == [(False, 1.0), (False, 2.0), (True, 0.0)]
    b = progress.find(conditions, "B")
    assert b is not None and b.reason == progress.FAILED and b.retries == 3 and b.last_error == "boom"
    assert progress.failed_step(conditions, names) is b
    assert progress.reset(conditions, names, _ts(20)) == ["B"]
    assert b.retries == 0 and b.reason == progress.PENDING
    explicit = progress.fail(conditions, "B", "later", _ts(21), policy, permanent=False, delay=7.5)
    assert explicit.delay == 7.5
    assert progress.fail(conditions, "B", "no", _ts(22), policy, permanent=True).give_up
    # A re-runnable plan's step is done only for the generation it ran at.
    assert progress.is_done(conditions, "A", generation=1) and not progress.is_done(conditions, "A", generation=2)
    progress.reset_plan(conditions, ["A"])
    assert progress.find(conditions, "A") is None
