"""Baseline (a) of figure 1: a bare grpc.aio server answering an empty unary call, nothing else
(no interceptors, no reflection, no health). Run as its own process:

    python -m bench.baseline --port PORT

/bench.Bare/Empty: any request bytes in, empty bytes out. With `--etcd ENDPOINT`, also
/bench.Bare/Range: the request bytes are an etcd key, read with the platform's etcd client
(EtcdConnection, as the apiserver reads) before answering empty: one inbound and one outbound
gRPC call and nothing else, which splits the apiserver's Get into what the two calls cost and
what its own code adds. Likewise /tke.platform.v1.ClusterService/Create (so the Create load
client calls it as it calls the apiserver): the request bytes are put under a new key with the
create transaction the apiserver makes (create_revision == 0, else read the key), then it answers
empty: the floor of the apiserver's Create in this design. With `--layers N`, every call first
passes the platform's call chain (tke.internal.rpc.interceptors.CallChain) with N steps that do
nothing but call on: the cost of one step of the chain, apart from the work it does."""

from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import Any

import grpc

from tke.internal.daemon import run_until_stopped
from tke.internal.rpc.interceptors import Call, CallChain, Context, Method

EMPTY_METHOD = "/bench.Bare/Empty"


async def _empty(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b""


class _Nothing:
    def wrap(self, call: Call, method: Method) -> Call:
        async def on(request: Any, context: Context) -> Any:
            return await call(request, context)

        return on


async def serve(port: int, etcd: str = "", layers: int = 0) -> None:
    server = grpc.aio.server(interceptors=[CallChain([_Nothing() for _ in range(layers)])] if layers else [])
    handlers = {
        "Empty": grpc.unary_unary_rpc_method_handler(
            _empty, request_deserializer=lambda b: b, response_serializer=lambda b: b
        )
    }
    conn = None
    if etcd:
        from aetcd import rpc

        from tke.internal.storage.etcd.connection import EtcdConfig, EtcdConnection

        conn = EtcdConnection(EtcdConfig(endpoints=[etcd]))

        async def _range(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            assert conn is not None
            await conn.call(conn.kv.Range, rpc.RangeRequest(key=request), idempotent=True)
            return b""

        handlers["Range"] = grpc.unary_unary_rpc_method_handler(
            _range, request_deserializer=lambda b: b, response_serializer=lambda b: b
        )
        created = itertools.count()
        absent = {"result": rpc.Compare.EQUAL, "target": rpc.Compare.CREATE, "create_revision": 0}

        async def _create(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            assert conn is not None
            key = f"/bench-relay/{next(created)}".encode()
            txn = rpc.TxnRequest(
                compare=[rpc.Compare(key=key, **absent)],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=request))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
            )
            await conn.call(conn.kv.Txn, txn, idempotent=False)
            return b""

        relay = grpc.unary_unary_rpc_method_handler(
            _create, request_deserializer=lambda b: b, response_serializer=lambda b: b
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("tke.platform.v1.ClusterService", {"Create": relay}),)
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bare", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await run_until_stopped()
    await server.stop(0)
    if conn is not None:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="a bare grpc.aio server answering an empty call")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--etcd", default="", help="etcd endpoint: also serve /bench.Bare/Range and the Create relay")
    parser.add_argument("--layers", type=int, default=0, help="no-op interceptors before the handler")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.etcd, args.layers))


if __name__ == "__main__":
    main()
