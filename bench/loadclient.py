"""A load client process for calls whose requests must differ (Create needs unique names):
`in_flight` coroutines, each calling in a loop, from `--start-at` (a wall-clock time shared by
every client process of a run) for `--seconds`. Prints one JSON line: calls, errors, latencies.

    python -m bench.loadclient --target apiserver|etcd --address ADDR ...

apiserver: ClusterService/Create of a new cluster per call, with a bearer token.
etcd: the same creation done directly with the etcd client library (the platform's
EtcdConnection over aetcd's stubs): one transaction comparing create_revision == 0, then put,
with a value of the size the apiserver stores."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import grpc
from aetcd import rpc

from tests.support.apiserver import cluster
from tke.internal.storage.etcd.connection import EtcdConfig, EtcdConnection
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc


async def _run(
    call: Callable[[str], Awaitable[None]], in_flight: int, seconds: float, start_at: float
) -> dict[str, object]:
    await asyncio.sleep(max(0.0, start_at - time.time()))
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []

    async def worker(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                await call(f"{n}x{i}")
            except grpc.aio.AioRpcError as err:
                errors.append(err.code().name)
            else:
                latencies.append((time.perf_counter() - started) * 1000)
            i += 1

    began = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(in_flight)))
    return {"calls": len(latencies), "errors": len(errors), "error_codes": sorted(set(errors)),
            "elapsed": time.monotonic() - began, "latencies_ms": [round(x, 3) for x in latencies]}  # fmt: skip


async def apiserver(args: argparse.Namespace) -> dict[str, object]:
    channel = grpc.aio.insecure_channel(args.address)
    stub = cluster_pb2_grpc.ClusterServiceStub(channel)
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    template = cluster("x")
    template.metadata.tenant_id = args.tenant

    async def create(suffix: str) -> None:
        obj = cluster_pb2.Cluster()
        obj.CopyFrom(template)
        obj.metadata.name = f"{args.tag}-{suffix}"
        await stub.Create(cluster_pb2.CreateClusterRequest(cluster=obj), metadata=metadata, timeout=30)

    try:
        return await _run(create, args.in_flight, args.seconds, args.start_at)
    finally:
        await channel.close()


async def etcd(args: argparse.Namespace) -> dict[str, object]:
    conn = EtcdConnection(EtcdConfig(endpoints=[args.address]))
    value = cluster("x").SerializeToString(deterministic=True) + b"\0" * 80  # uid, timestamps: about as big
    equal, create_target = rpc.Compare.CompareResult.EQUAL, rpc.Compare.CompareTarget.CREATE

    async def create(suffix: str) -> None:
        key = f"/bench-raw/{args.tenant}/{args.tag}-{suffix}".encode()
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=key, result=equal, target=create_target, create_revision=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        resp = await conn.call(conn.kv.Txn, request, idempotent=False)
        if not resp.succeeded:
            raise RuntimeError("raw create found the key")

    try:
        return await _run(create, args.in_flight, args.seconds, args.start_at)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--target", choices=["apiserver", "etcd"], required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--tenant", default="bench")
    parser.add_argument("--tag", required=True, help="prefix of the names created (unique per process and run)")
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    result = asyncio.run(apiserver(args) if args.target == "apiserver" else etcd(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
