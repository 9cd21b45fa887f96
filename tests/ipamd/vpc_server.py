"""A small VPC API server on 127.0.0.1 for the cloud-VPC provider's tests: subnets, address
reservations with owners, bindings to nodes, and knobs for slow, failing and oversized answers;
plain HTTP or HTTPS. It keeps
a log of every bind it applied, so a test can see that no late request moved an address."""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from tests.support.pki import CertFiles


@dataclass
class Reservation:
    owner: str
    node: str = ""


@dataclass
class VPCState:
    subnets: list[dict[str, str]] = field(default_factory=list)
    addresses: dict[str, Reservation] = field(default_factory=dict)
    token: str = "vpc-token"
    # Seconds to sleep before answering, by operation ("reserve", "bind", "release", "subnets").
    delay: dict[str, float] = field(default_factory=dict)
    # Answer this many requests of an operation with HTTP 503 before serving it.
    fail: dict[str, int] = field(default_factory=dict)
    # Answer every request of these operations with HTTP 500.
    broken: set[str] = field(default_factory=set)
    # Bytes of padding added to every answer (a "padding" member of the JSON object).
    padding: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    # Connections being served now: late requests still sleeping count.
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    state: VPCState

    def log_message(self, format: str, *args: Any) -> None:
        return

    def handle(self) -> None:
        with self.state.lock:
            self.state.in_flight += 1
        try:
            super().handle()
        finally:
            with self.state.lock:
                self.state.in_flight -= 1

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        if self.state.padding:
            payload = {**payload, "padding": "x" * self.state.padding}
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else {}

    def _gate(self, op: str) -> bool:
        s = self.state
        if self.headers.get("Authorization") != f"Bearer {s.token}":
            self._reply(401, {"message": "bad token"})
            return False
        time.sleep(s.delay.get(op, 0.0))
        with s.lock:
            s.calls.append((op, self.path))
            if op in s.broken:
                self._reply(500, {"message": "broken"})
                return False
            if s.fail.get(op, 0) > 0:
                s.fail[op] -= 1
                self._reply(503, {"message": "try again"})
                return False
        return True

    def _address(self) -> tuple[str, str, bool]:
        parts = urlparse(self.path).path.strip("/").split("/")
        # v1 subnets <id> addresses <ip> [binding]
        return unquote(parts[2]), unquote(parts[4]), len(parts) == 6

    def do_GET(self) -> None:
        if self._gate("subnets"):
            self._reply(200, {"subnets": self.state.subnets})

    def do_PUT(self) -> None:
        _, ip, binding = self._address()
        op = "bind" if binding else "reserve"
        body = self._body()
        if not self._gate(op):
            return
        s = self.state
        with s.lock:
            current = s.addresses.get(ip)
            if binding:
                if current is None or current.owner != body["owner"]:
                    s.refused.append((op, ip))
                    self._reply(409, {"message": f"{ip} is not reserved for {body['owner']}"})
                    return
                current.node = body["node"]
            elif current is None:
                s.addresses[ip] = Reservation(owner=body["owner"])
            elif current.owner != body["owner"]:
                s.refused.append((op, ip))
                self._reply(409, {"message": f"{ip} belongs to {current.owner}"})
                return
        self._reply(200, {})

    def do_DELETE(self) -> None:
        _, ip, _ = self._address()
        owner = parse_qs(urlparse(self.path).query).get("owner", [""])[0]
        if not self._gate("release"):
            return
        s = self.state
        with s.lock:
            current = s.addresses.get(ip)
            if current is None:
                self._reply(404, {"message": "unknown address"})
                return
            if current.owner != owner:
                s.refused.append(("release", ip))
                self._reply(409, {"message": f"{ip} belongs to {current.owner}"})
                return
            del s.addresses[ip]
        self._reply(200, {})


class _Server(ThreadingHTTPServer):
    # The standard library's listen backlog is 5: a burst of concurrent clients would overflow
    # it and see resets or second-long stalls that no real API gateway causes.
    request_queue_size = 128


class VPCServer:
    """Serves VPCState on a free loopback port until stop(); over TLS with `tls`."""

    def __init__(self, state: VPCState, tls: CertFiles | None = None) -> None:
        handler = type("Handler", (_Handler,), {"state": state})
        self.state = state
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def idle(self) -> bool:
        """No request is being served (the ones sent so far have been answered)."""
        with self.state.lock:
            return self.state.in_flight == 0

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
