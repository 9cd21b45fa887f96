"""A client that sends gRPC calls and never reads their answers: one HTTP/2 connection whose
flow-control window for each stream is 0 (SETTINGS_INITIAL_WINDOW_SIZE), so the server can
send the response headers but not one byte of a response message. It answers the server's
SETTINGS and PINGs, as a live client does, and nothing else. Tests use it to hold responses in
the server's memory for as long as they like, and `deliver` lets one response through; `start`
opens a call that never sends its request. It keeps the server's SETTINGS (`settings`) and the
streams the server reset (`reset`, with their error codes)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable

from tke.internal.cni import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
INITIAL_WINDOW_SIZE, MAX_CONCURRENT_STREAMS = 0x4, 0x3
REFUSED_STREAM = 0x7


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class UnreadCalls:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.next_stream = 1
        self.answered: set[int] = set()  # streams the server sent response headers (or trailers only) on
        self.ended: set[int] = set()  # streams the server ended: their trailers came
        self.reset: dict[int, int] = {}  # streams the server reset (RST_STREAM), with its error code
        self.settings: dict[int, int] | None = None  # the server's first SETTINGS, once acknowledged
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, host: str, port: int) -> UnreadCalls:
        return await cls._begin(*await asyncio.open_connection(host, port))

    @classmethod
    async def connect_unix(cls, path: str) -> UnreadCalls:
        return await cls._begin(*await asyncio.open_unix_connection(path))

    @classmethod
    async def _begin(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> UnreadCalls:
        writer.write(PREFACE + _frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 0)))
        await writer.drain()
        return cls(reader, writer)

    async def send(self, path: str, request: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> int:
        """Send one unary call; its stream id."""
        stream = self._open(path, metadata)
        message = b"\x00" + struct.pack(">I", len(request)) + request
        self.writer.write(_frame(DATA, END_STREAM, stream, message))
        await self.writer.drain()
        return stream

    async def start(self, path: str) -> int:
        """Open a call, send its headers and never its request; its stream id."""
        stream = self._open(path, ())
        await self.writer.drain()
        return stream

    def _open(self, path: str, metadata: tuple[tuple[str, str], ...]) -> int:
        stream, self.next_stream = self.next_stream, self.next_stream + 2
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *metadata,
        ]
        self.writer.write(_frame(HEADERS, END_HEADERS, stream, hpack.encode_headers(headers)))
        return stream

    async def wait_settings(self) -> dict[int, int]:
        """The server's SETTINGS (identifier: value), once this client has acknowledged them:
        streams opened after are under them."""
        await self._wait(lambda: self.settings is not None)
        assert self.settings is not None
        return self.settings

    async def wait_answered(self, streams: set[int]) -> None:
        """Until the server has sent response headers on every one of `streams`."""
        await self._wait(lambda: streams <= self.answered)

    async def deliver(self, stream: int, size: int = 4 << 20) -> None:
        """Open `stream`'s flow-control window, and the connection's, by `size` bytes (more than
        its response) and wait until its response has ended."""
        increment = struct.pack(">I", size)
        self.writer.write(_frame(WINDOW_UPDATE, 0, stream, increment) + _frame(WINDOW_UPDATE, 0, 0, increment))
        await self.writer.drain()
        await self._wait(lambda: stream in self.ended)

    async def _wait(self, done: Callable[[], bool]) -> None:
        while not done():
            if self._task.done():
                raise ConnectionError("the server closed the connection")
            self.changed.clear()
            await self.changed.wait()

    async def _read(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(9)
                length = int.from_bytes(head[:3], "big")
                kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = await self.reader.readexactly(length)
                if kind == SETTINGS and not flags & ACK:
                    self.writer.write(_frame(SETTINGS, ACK, 0))
                    if self.settings is None:
                        pairs = (payload[i : i + 6] for i in range(0, len(payload), 6))
                        self.settings = {int.from_bytes(p[:2], "big"): int.from_bytes(p[2:], "big") for p in pairs}
                        self.changed.set()
                elif kind == PING and not flags & ACK:
                    self.writer.write(_frame(PING, ACK, 0, payload))
                elif kind == HEADERS:
                    self.answered.add(stream)
                    if flags & END_STREAM:
                        self.ended.add(stream)
                    self.changed.set()
                elif kind == RST_STREAM:
                    self.reset[stream] = int.from_bytes(payload[:4], "big")
                    self.changed.set()
                elif kind == GOAWAY:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.changed.set()

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
