"""Baseline (a) of figure 1: a bare grpc.aio server answering an empty unary call, nothing else
(no interceptors, no reflection, no health). Run as its own process:

    python -m tke.internal.bench.baseline --port PORT

The method is /bench.Bare/Empty: any request bytes in, empty bytes out."""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

EMPTY_METHOD = "/bench.Bare/Empty"


async def _empty(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b""


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        _empty, request_deserializer=lambda b: b, response_serializer=lambda b: b
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bare", {"Empty": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description="a bare grpc.aio server answering an empty call")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
