"""The webhook audit sink against an HTTP endpoint on loopback: batches arrive as JSON arrays
with the configured headers and bearer token; a non-2xx answer (a redirect too) or an endpoint
that does not answer in time fails the batch, which the Auditor counts as dropped; behind the
Auditor, events arrive in batches, and every one queued before close is delivered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tke.internal.auth.audit import AuditEvent, Auditor
from tke.plugins.audit.webhook import Webhook


@dataclass
class Endpoint:
    url: str
    posts: list[tuple[dict[str, str], list[dict[str, Any]]]] = field(default_factory=list)
    status: int = 204
    delay: float = 0.0


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            state.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(state.delay)
            self.send_response(state.status)
            if state.status == 302:
                self.send_header("location", "/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/audit"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def event(n: int) -> AuditEvent:
    return AuditEvent(time="2026-01-01T00:00:00Z", request_id=f"r{n}", method="/x/Get", user="alice", code="OK")


async def test_a_batch_is_posted_as_json_with_headers_and_token(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TKE_TEST_AUDIT_TOKEN", "s3cret")
    sink = Webhook(url=endpoint.url, headers={"x-source": "tke"}, token_env="TKE_TEST_AUDIT_TOKEN")
    try:
        await sink.write([event(1), event(2)])
    finally:
        await sink.close()
    [(headers, body)] = endpoint.posts
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-source"] == "tke"
    assert [e["request_id"] for e in body] == ["r1", "r2"]
    assert body[0] == event(1).to_dict()


@pytest.mark.parametrize("status", [500, 403, 302])
async def test_an_answer_other_than_2xx_fails_the_batch(endpoint: Endpoint, status: int) -> None:
    endpoint.status = status
    sink = Webhook(url=endpoint.url)
    try:
        with pytest.raises(httpx.HTTPStatusError):
            await sink.write([event(1)])
    finally:
        await sink.close()
    assert len(endpoint.posts) == 1  # a redirect is not followed


async def test_an_endpoint_that_does_not_answer_in_time_fails_the_batch(endpoint: Endpoint) -> None:
    endpoint.delay = 3.0
    sink = Webhook(url=endpoint.url, timeout=0.2)
    try:
        with pytest.raises(httpx.TimeoutException):
            await sink.write([event(1)])
    finally:
        await sink.close()


async def test_behind_the_auditor_events_arrive_in_batches_and_failures_are_counted(endpoint: Endpoint) -> None:
    auditor = Auditor([Webhook(url=endpoint.url)], batch=10, linger=0.05)
    auditor.start()
    for n in range(25):
        auditor.emit(event(n))
    await auditor.close(drain_seconds=30)
    delivered = [e["request_id"] for _, body in endpoint.posts for e in body]
    assert delivered == [f"r{n}" for n in range(25)]
    assert all(len(body) <= 10 for _, body in endpoint.posts) and len(endpoint.posts) >= 3
    assert auditor.dropped == 0

    endpoint.status = 503
    failing = Auditor([Webhook(url=endpoint.url)], batch=10)
    failing.start()
    for n in range(5):
        failing.emit(event(n))
    await failing.close(drain_seconds=30)
    assert failing.dropped == 5
