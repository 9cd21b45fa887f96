"""The metrics endpoint (tke.internal.metrics.serve) that tke-apiserver, tke-ipamd and
tke-controller expose, probed with raw sockets as anyone who reaches its address would.

It answers before any authentication. prometheus_client's own server gave every connection a
thread and waited on it for ever: 5,500 connections that sent half a request held 5,500 threads
and open files of the apiserver (+90 MiB) for as long as the client kept them, eating the open
files the process keeps for etcd and its logs, then those its gRPC listeners were fitted into.
Now a stalled connection is closed, and connections beyond the cap are closed unanswered while
the ones in place are served.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tke.internal import metrics

# A request that is never finished: the server waits for the rest of its headers.
HALF_A_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
# What the client waits, at most, for the server to close a connection: far above any normal
# time, so that only a server that keeps the connection runs out of it.
PATIENCE = 30.0


@contextmanager
def endpoint(idle_timeout: float, max_connections: int = 2, max_per_address: int = 2) -> Iterator[str]:
    """A metrics endpoint serving 2 connections at once (by default); its address."""
    port = free_port()
    server = metrics.serve(
        f"127.0.0.1:{port}", max_connections=max_connections, max_per_address=max_per_address, idle_timeout=idle_timeout
    )
    assert server is not None
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def half_request(address: str, source: str = "127.0.0.1") -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE, source_address=(source, 0))
    sock.sendall(HALF_A_REQUEST)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed `sock` without an answer; a timeout means it kept it."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def scrape(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
            return resp.status == 200 and b"tke_metrics_connections_refused_total" in resp.read()
    except OSError:
        return False


def refused_total() -> float:
    value = metrics.METRICS_CONNECTIONS_REFUSED._value.get()
    return float(value)


def test_a_stalled_connection_is_closed(capfd: pytest.CaptureFixture[str]) -> None:
    with endpoint(idle_timeout=0.5) as address, half_request(address) as sock:
        assert closed_by_server(sock), "the endpoint kept a connection that sent half a request"
        assert scrape(address)
    # A stalled client is a handled case: nothing on the server's output, no traceback.
    assert "Traceback" not in capfd.readouterr().err


async def test_connections_beyond_the_cap_are_closed_and_places_come_back() -> None:
    # The holders stay while the test needs them: the idle timeout is far above its patience.
    with endpoint(idle_timeout=PATIENCE * 4) as address:
        before = refused_total()
        holders = [half_request(address) for _ in range(2)]
        try:
            # The server accepts in order: the holders have their places before this is judged.
            with half_request(address) as third:
                assert closed_by_server(third), "a connection beyond max_connections was kept"
            assert refused_total() == before + 1
            assert not scrape(address)
        finally:
            for sock in holders:
                sock.close()
        await wait_for(lambda: scrape(address), what="a scrape once the holders are gone")


async def test_one_address_holds_its_share_and_the_scraper_keeps_its_place() -> None:
    """A client trickling into its connections from one address takes at most its share: the
    scraper, from another address, is still answered."""
    with endpoint(idle_timeout=PATIENCE * 4, max_connections=4, max_per_address=2) as address:
        before = refused_total()
        holders = [half_request(address, source="127.0.0.2") for _ in range(2)]
        try:
            with half_request(address, source="127.0.0.2") as third:
                assert closed_by_server(third), "one address held more than its share"
            assert refused_total() == before + 1
            assert scrape(address)  # from 127.0.0.1
        finally:
            for sock in holders:
                sock.close()

        def places_back() -> bool:
            """The address holds its share again (the server accepts in order: the scrape is
            answered after both were judged)."""
            refused = refused_total()
            again = [half_request(address, source="127.0.0.2") for _ in range(2)]
            try:
                return scrape(address) and refused_total() == refused
            finally:
                for sock in again:
                    sock.close()

        await wait_for(places_back, what="the address's places back once it let go")
