"""A client process of many ClusterService watches, for tests that stop it (SIGSTOP) to make
watchers that stop reading.

    python -m tests.support.stalled_watchers ADDRESS COUNT RESOURCE_VERSION

It opens COUNT watches from RESOURCE_VERSION over a few channels, prints "ready" once every
one has its first BOOKMARK, then reads on; when every stream has ended it prints one JSON line: per stream the
final status code name and details, and how many events it read."""

from __future__ import annotations

import asyncio
import json
import sys

import grpc

from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

STREAMS_PER_CHANNEL = 10


async def main(address: str, count: int, resource_version: str) -> None:
    channels = [grpc.aio.insecure_channel(address) for _ in range(max(1, count // STREAMS_PER_CHANNEL))]
    ready = asyncio.Semaphore(0)
    ended: list[dict[str, object]] = []

    async def watch(i: int) -> None:
        stub = cluster_pb2_grpc.ClusterServiceStub(channels[i % len(channels)])
        call = stub.Watch(cluster_pb2.WatchClustersRequest(resource_version=resource_version))
        events, signalled = 0, False
        try:
            async for event in call:
                events += 1
                if not signalled and event.type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK:
                    signalled = True
                    ready.release()
            ended.append({"code": "OK", "details": "", "events": events})
        except grpc.aio.AioRpcError as err:
            ended.append({"code": err.code().name, "details": err.details() or "", "events": events})
        if not signalled:
            ready.release()

    tasks = [asyncio.create_task(watch(i)) for i in range(count)]
    for _ in range(count):
        await ready.acquire()
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    print(json.dumps(ended), flush=True)
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
