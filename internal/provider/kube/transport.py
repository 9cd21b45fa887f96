"""The HTTP transport of a cluster's API whose host a tenant wrote: every TCP connection goes to
an address the address policy admitted, from the same lookup (tke.internal.provider.addresses).

httpx resolves a URL's host itself when it connects; checking the name before (and letting
httpx look it up again) leaves DNS rebinding open: a name answering a public address to the
check and 127.0.0.1 or 169.254.169.254 to the connection. So the connection pool's network
backend (httpcore's seam for opening sockets) is replaced by `CheckedNetworkBackend`: it asks
the policy for the host's admitted addresses (one lookup, every address checked, AddressRefused
otherwise) and connects the socket to one of them. Only the socket changes: the request's URL
keeps the name, so the Host header, TLS's server name (SNI) and the certificate check are the
name's (or the access's `tls_server_name`), as without the policy.

A refusal comes out of the request as AddressRefused (kube.api maps it to PermanentError); a
name that does not resolve, or no address that accepts, as httpcore's ConnectError, which httpx
maps to its ConnectError as for any unreachable server.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable

import httpcore
import httpx

from tke.internal.provider.addresses import AddressPolicy

# httpx's own defaults for its transport's pool (httpx.AsyncHTTPTransport's DEFAULT_LIMITS).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


class CheckedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses `policy` admitted, looked up once per
    connection; the rest is `inner`'s (httpcore's asyncio backend by default)."""

    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # `timeout` bounds the lookup and the connection together, as it did in httpx.
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await self.policy.admitted(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"{host} was not resolved within {timeout:g}s") from None
        except OSError as err:
            raise httpcore.ConnectError(f"cannot resolve {host}: {err}") from err
        failure: httpcore.ConnectError | None = None
        for ip in addresses:
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                return await self.inner.connect_tcp(str(ip), port, left, local_address, socket_options)
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as err:
                failure = err
        assert failure is not None  # admitted returns at least one address
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (its request and response handling, its error mapping) on a
    connection pool whose connections `CheckedNetworkBackend` opens. httpx 0.28 takes no network
    backend, so the pool it made is replaced (pyproject pins httpx below 0.29)."""

    def __init__(self, ssl_context: ssl.SSLContext, policy: AddressPolicy) -> None:
        super().__init__(verify=ssl_context, trust_env=False, limits=LIMITS, retries=0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections,
            keepalive_expiry=LIMITS.keepalive_expiry,
            retries=0,
            network_backend=CheckedNetworkBackend(policy),
        )


class ResponseTooLarge(Exception):
    """A response's body passed the byte limit, or a list its count (kube.api maps it to
    PermanentError naming `option`)."""

    def __init__(self, message: str, option: str = "max_response_bytes") -> None:
        super().__init__(message)
        self.option = option


class ResponseTooSlow(Exception):
    """A response did not end by its request's deadline (kube.api: TemporaryError)."""


# A request extension: a response streamed for long (a watch), whose 200 answer its caller bounds
# line by line instead of by the response's size.
STREAMED = "tke_streamed"


class BoundedTransport(httpx.AsyncBaseTransport):
    """Bounds what a server (a tenant's) may make a request cost, whatever it answers: the whole
    exchange (connection, headers, body) ends by a deadline, `deadline` seconds or the request's
    own read timeout when that is longer (a watch); a body passing `max_bytes` raises
    ResponseTooLarge as it passes (never more is held), except a STREAMED request's 200 answer.

    httpx's own timeouts bound each network read, not the exchange: a server that sends a byte
    every few seconds, or an endless chunked body, kept a request going for ever."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, max_bytes: int, deadline: float) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self.deadline = deadline

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        seconds = max(self.deadline, timeouts.get("read") or 0.0)
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.inner.handle_async_request(request)
        except TimeoutError:
            raise ResponseTooSlow(f"no answer within {seconds:g}s") from None
        assert isinstance(response.stream, httpx.AsyncByteStream)
        # A streamed request's caller bounds what it reads of a 200 answer; an error's body it
        # reads whole, so that one is bounded here.
        limit = None if request.extensions.get(STREAMED) and response.status_code == 200 else self.max_bytes
        response.stream = _BoundedStream(response.stream, limit, deadline, seconds)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __deepcopy__(self, memo: dict[int, object]) -> BoundedTransport:
        return self  # shared, not copied (lightkube deep-copies its parameters)


class _BoundedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int | None, deadline: float, seconds: float) -> None:
        self.inner = inner
        self.limit = limit
        self.deadline = deadline
        self.seconds = seconds

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        chunks = aiter(self.inner)
        while True:
            try:
                async with asyncio.timeout_at(self.deadline):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ResponseTooSlow(f"the answer did not end within {self.seconds:g}s") from None
            received += len(chunk)
            if self.limit is not None and received > self.limit:
                raise ResponseTooLarge(f"answered more than {self.limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()
