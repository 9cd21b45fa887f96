"""A hostile "Kubernetes API server" for tests: what a tenant who runs (or chooses the URL of) a
cluster's API server can make it answer, on a loopback port with a certificate from a test CA.

It answers every request by its `mode` (changeable while it runs):
- "huge": `code` (200) with a JSON object whose one string is `size` bytes (Content-Length
  told);
- "endless": 200, chunked, a JSON document that never ends (a list, or a watch line that never
  gets its newline), or, with `size`, that ends, unfinished, after `size` bytes;
- "trickle": 200 with a Content-Length it then sends a byte every half second of;
- "pages": a NodeList page of 500 Nodes with a `continue` token, forever (never the last page),
  or, with `size`, for `size` pages;
- "deep": 200 with `size` nested JSON arrays (a tiny body that no recursive parser survives);
- "status": `status` code with a Status whose message is `size` bytes of terminal escapes,
  newlines and text;
- "body": 200 with `body` (JSON of any shape);
- "mute": accepts the TCP connection and never speaks TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.pki import TestCA


def _page(more: bool) -> bytes:
    return json.dumps(
        {
            "kind": "NodeList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "1", "continue": "more" if more else ""},
            "items": [{"metadata": {"name": f"node-{i:04d}", "labels": {"x": "y" * 60}}} for i in range(500)],
        }
    ).encode()


_PAGE, _LAST = _page(True), _page(False)


@dataclass
class HostileKube:
    mode: str = "huge"
    size: int = 1 << 20
    status: int = 500
    code: int = 200
    body: bytes = b"{}"
    url: str = ""
    ca_pem: bytes = b""
    requests: int = 0
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            raise ConnectionError from None
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                await reader.readexactly(int(value))
        self.requests += 1
        mode = self.mode
        if mode == "huge":
            prefix, suffix = b'{"kind":"NodeList","apiVersion":"v1","metadata":{},"items":[],"x":"', b'"}'
            length = len(prefix) + self.size + len(suffix)
            writer.write(_head(self.code, f"Content-Length: {length}") + prefix)
            chunk = b"x" * 65536
            left = self.size
            while left > 0 and not _gone(reader, writer):
                writer.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
                await _sent(writer)
            writer.write(suffix)
        elif mode == "endless":
            writer.write(_head(200, "Transfer-Encoding: chunked") + _chunk(b'{"type":"ADDED","object":{"x":"'))
            chunk = _chunk(b"x" * 65536)
            left = self.size or -1
            while left and not stop.is_set() and not _gone(reader, writer):
                writer.write(chunk)
                await _sent(writer)
                left = max(left - 65536, 0) if left > 0 else left
            writer.write(_chunk(b'"}}\n') + b"0\r\n\r\n")
        elif mode == "trickle":
            writer.write(_head(200, "Content-Length: 1000000"))
            while not stop.is_set() and not _gone(reader, writer):
                writer.write(b" ")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
        elif mode == "pages":
            page = _LAST if self.size and self.requests >= self.size else _PAGE
            writer.write(_head(200, f"Content-Length: {len(page)}") + page)
        elif mode == "body":
            writer.write(_head(200, f"Content-Length: {len(self.body)}") + self.body)
        elif mode == "deep":
            body = b"[" * self.size + b"]" * self.size
            writer.write(_head(200, f"Content-Length: {len(body)}") + body)
        elif mode == "status":
            message = ("\x1b[2J\x1b]0;owned\x07\nERROR forged log line\r\n" * (self.size // 40 + 1))[: self.size]
            body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                               "code": self.status}).encode()  # fmt: skip
            writer.write(_head(self.status, f"Content-Length: {len(body)}") + body)
        await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
        """Requests of one connection (kept alive) until the client or the test ends it."""
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while not stop.is_set():
                await self._answer(reader, writer, stop)


def _head(code: int, header: str) -> bytes:
    return f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n{header}\r\n\r\n".encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@contextlib.contextmanager
def hostile_kube(directory: Path, mode: str = "huge", size: int = 1 << 20) -> Iterator[HostileKube]:
    """The server on 127.0.0.1, in a thread of its own; stopped (every connection closed) after."""
    ca = TestCA(directory)
    serving = ca.issue("server", common_name="hostile", hosts=("127.0.0.1",))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(serving.cert_file, serving.key_file)
    server = HostileKube(mode=mode, size=size, ca_pem=Path(ca.ca_file).read_bytes())
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        # TLS is started by hand, so that a "mute" connection never gets a handshake.
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert stop is not None
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                if server.mode == "mute":
                    await stop.wait()
                    return
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await writer.start_tls(tls)
                    await server._serve(reader, writer, stop)
            finally:
                tasks.discard(task)
                writer.transport.abort()

        listener = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        server.url = f"https://127.0.0.1:{port}"
        server._loop = asyncio.get_running_loop()
        started.set()
        await stop.wait()
        listener.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield server
    finally:
        assert server._loop is not None and stop is not None
        server._loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def _gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether the client went away (a TLS transport does not say so by is_closing)."""
    return writer.transport.is_closing() or reader.at_eof() or reader.exception() is not None


async def _sent(writer: asyncio.StreamWriter) -> None:
    """drain, and a turn of the loop: drain does not yield while the transport takes data, and a
    client that went away is only seen in a later turn."""
    await writer.drain()
    await asyncio.sleep(0)
