"""A small asyncio HTTP/1.1 client for provider APIs: one request per connection, JSON bodies,
Content-Length or chunked answers. Callers put a deadline over the whole exchange (connect,
send, read) with asyncio.timeout.

Why not a thread running urllib: a thread cannot be cancelled, and a pool of them queues
requests behind slow ones, so a burst against a slow API would time out in the queue. Here a
timed-out request is abandoned and its connection closed at once.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_BODY = 16 * 1024 * 1024


class HTTPError(OSError):
    """The server could not be reached, or its answer was not HTTP."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise HTTPError("answer too large")
            body += await reader.readexactly(size)
            await reader.readline()
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY:
            raise HTTPError("answer too large")
        return await reader.readexactly(length)
    return await reader.read(MAX_BODY)


async def _exchange(
    method: str, url: str, headers: dict[str, str], data: bytes, context: ssl.SSLContext | None
) -> Response:
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    reader, writer = await asyncio.open_connection(
        host, port, ssl=(context or ssl.create_default_context()) if secure else None
    )
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(data)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        await writer.drain()
        status_line = await reader.readline()
        fields = status_line.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/"):
            raise HTTPError(f"not an HTTP answer: {status_line[:60]!r}")
        answer_headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        return Response(status=int(fields[1]), body=await _read_body(reader, answer_headers))
    except (ValueError, asyncio.IncompleteReadError) as err:
        raise HTTPError(f"bad HTTP answer: {err}") from None
    finally:
        writer.close()


async def request(
    method: str,
    url: str,
    *,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Response:
    """One HTTP exchange; callers bound it with asyncio.timeout. Raises HTTPError (OSError)."""
    all_headers = {"Accept": "application/json", **(headers or {})}
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    return await _exchange(method, url, all_headers, data, context)
