"""Metrics and structured logs, as an operator scrapes and reads them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import urllib.request
from pathlib import Path

import grpc

from tests.support.apiserver import Running, cluster
from tests.support.etcd import EtcdProcess
from tests.support.ports import free_port
from tke.internal import metrics
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        body: bytes = resp.read()
    return body.decode()


async def test_metrics_count_calls_watches_and_etcd_round_trips(api: Running) -> None:
    port = free_port()
    metrics.serve(f"127.0.0.1:{port}")
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("m1")))
    with contextlib.suppress(grpc.aio.AioRpcError):
        await api.clusters.Get(cluster_pb2.GetClusterRequest(name="absent"))
    watch = api.clusters.Watch(cluster_pb2.WatchClustersRequest())
    await watch.read()
    text = await asyncio.to_thread(scrape, port)
    assert 'tke_grpc_server_handled_total{code="OK",method="Create",service="tke.platform.v1.ClusterService"}' in text
    assert (
        'tke_grpc_server_handled_total{code="NOT_FOUND",method="Get",service="tke.platform.v1.ClusterService"}' in text
    )
    assert 'tke_watch_clients{kind="clusters"}' in text
    assert 'tke_etcd_request_duration_seconds_count{method="Txn",outcome="OK"}' in text
    assert "tke_grpc_server_handling_seconds_bucket" in text
    watch.cancel()


async def test_json_logs_carry_the_request_id(etcd: EtcdProcess, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "apiserver.toml"
    config.write_text(
        f'log_format = "json"\nmetrics_address = ""\n[listen]\naddress = "127.0.0.1:{port}"\n'
        f'[etcd]\nendpoints = ["{etcd.endpoint}"]\nprefix = "/json-logs"\n'
    )
    binary = str(Path(sys.executable).parent / "tke-apiserver")
    proc = await asyncio.create_subprocess_exec(binary, "--config", str(config), stderr=asyncio.subprocess.PIPE)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = cluster_pb2_grpc.ClusterServiceStub(channel)
            await stub.List(
                cluster_pb2.ListClustersRequest(),
                metadata=[("x-request-id", "trace-me-42")],
                wait_for_ready=True,
                timeout=20,
            )
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.stderr is not None
    lines = (await proc.stderr.read()).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "msg"} <= set(r) for r in records)
    access = [r for r in records if r.get("request_id") == "trace-me-42"]
    assert access and "ClusterService/List OK" in access[0]["msg"]


async def test_with_an_audit_log_the_access_log_keeps_only_the_failures(etcd: EtcdProcess, tmp_path: Path) -> None:
    """The audit log records every call; the access log then has the successful ones at DEBUG
    only (they cost a line per call), and the failures at INFO as without audit."""
    port = free_port()
    (tmp_path / "tokens.csv").write_text("admin-token,root,u-root,tke:platform-admins,\n")
    config = tmp_path / "apiserver.toml"
    config.write_text(
        f'log_format = "json"\nmetrics_address = ""\n[listen]\naddress = "127.0.0.1:{port}"\n'
        f'[etcd]\nendpoints = ["{etcd.endpoint}"]\nprefix = "/audited-logs"\n'
        f'[[auth.authenticators]]\nplugin = "token-file"\noptions = {{ path = "{tmp_path / "tokens.csv"}" }}\n'
        f'[[auth.authorizers]]\nplugin = "policy"\n'
        f'[[auth.audit]]\nplugin = "jsonl-file"\noptions = {{ path = "{tmp_path / "audit.jsonl"}" }}\n'
    )
    binary = str(Path(sys.executable).parent / "tke-apiserver")
    proc = await asyncio.create_subprocess_exec(binary, "--config", str(config), stderr=asyncio.subprocess.PIPE)
    token = ("authorization", "Bearer admin-token")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = cluster_pb2_grpc.ClusterServiceStub(channel)
            await stub.List(
                cluster_pb2.ListClustersRequest(), metadata=[token, ("x-request-id", "fine-1")], wait_for_ready=True,
                timeout=20,
            )  # fmt: skip
            absent = cluster_pb2.GetClusterRequest(name="absent")
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Get(absent, metadata=[token, ("x-request-id", "bad-1")])
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.stderr is not None
    records = [json.loads(line) for line in (await proc.stderr.read()).decode().splitlines()]
    by_id = {r["request_id"]: r for r in records if r.get("request_id")}
    assert set(by_id) == {"bad-1"}, by_id
    assert by_id["bad-1"]["level"] == "info" and "ClusterService/Get NOT_FOUND" in by_id["bad-1"]["msg"]
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(e["request_id"], e["code"]) for e in audit if e["request_id"] in ("fine-1", "bad-1")] == [
        ("fine-1", "OK"),
        ("bad-1", "NOT_FOUND"),
    ]
