"""Baseline (a) of figure 1: a bare grpc.aio server answering an empty unary call, nothing else
(no interceptors, no reflection, no health). Run as its own process:

    python -m tke.internal.bench.baseline --port PORT

/bench.Bare/Empty: any request bytes in, empty bytes out. With `--etcd ENDPOINT`, also
/bench.Bare/Range: the request bytes are an etcd key, read with the platform's etcd client
(EtcdConnection, as the apiserver reads) before answering empty: one inbound and one outbound
gRPC call and nothing else, which splits the apiserver's Get into what the two calls cost and
what its own code adds."""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

EMPTY_METHOD = "/bench.Bare/Empty"


async def _empty(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b""


async def serve(port: int, etcd: str = "") -> None:
    server = grpc.aio.server()
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

        async def _range(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            assert conn is not None
            await conn.call(conn.kv.Range, rpc.RangeRequest(key=request), idempotent=True)
            return b""

        handlers["Range"] = grpc.unary_unary_rpc_method_handler(
            _range, request_deserializer=lambda b: b, response_serializer=lambda b: b
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bare", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)
    if conn is not None:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="a bare grpc.aio server answering an empty call")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--etcd", default="", help="etcd endpoint: also serve /bench.Bare/Range")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.etcd))


if __name__ == "__main__":
    main()
