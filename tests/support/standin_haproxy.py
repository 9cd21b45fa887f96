"""`python -m tests.support.standin_haproxy CONFIG`: the haproxy static pod of a stand-in
master (tests/support/standin_kube.py starts it), reading the haproxy.cfg the platform wrote
(tke.internal.provider.kube.vip). It does what that configuration asks in TCP mode: listen on
the frontend's `bind *:PORT`, and send each connection to the backend's servers in turn
(roundrobin), skipping a server that refuses it (a failed check). HTTP checks, timeouts and
logging are not imitated. It stops on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import sys
from pathlib import Path

CONNECT_TIMEOUT = 5.0


def parse(text: str) -> tuple[int, list[tuple[str, int]]]:
    """(the frontend's port, the backend servers' (host, port)) of a haproxy.cfg."""
    bind = re.search(r"^\s*bind\s+\*:(\d+)\s*$", text, re.MULTILINE)
    servers = re.findall(r"^\s*server\s+\S+\s+\[?([^\s\]]+?)\]?:(\d+)\b", text, re.MULTILINE)
    if bind is None or not servers:
        raise ValueError("haproxy.cfg: want a `bind *:PORT` frontend and `server NAME HOST:PORT` lines")
    return int(bind.group(1)), [(host, int(port)) for host, port in servers]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


class Balancer:
    def __init__(self, servers: list[tuple[str, int]]) -> None:
        self.servers = servers
        self._next = itertools.cycle(range(len(servers)))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        start = next(self._next)
        for i in range(len(self.servers)):
            host, port = self.servers[(start + i) % len(self.servers)]
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                continue  # haproxy's `redispatch`: the next server
        return None

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            client_writer.close()
            return
        server_reader, server_writer = upstream
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))


async def serve(config: Path) -> None:
    port, servers = parse(config.read_text())
    server = await asyncio.start_server(Balancer(servers).handle, "0.0.0.0", port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"haproxy stand-in: *:{port} -> {', '.join(f'{h}:{p}' for h, p in servers)}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.standin_haproxy HAPROXY_CFG", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(Path(argv[0])))
    except (OSError, ValueError) as err:
        print(f"haproxy stand-in: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
