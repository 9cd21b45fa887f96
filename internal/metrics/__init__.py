"""Prometheus metrics of every server (prometheus_client), defined once here so that names and
labels stay consistent across binaries, and the HTTP endpoint that exposes them.

Label values are bounded: gRPC method names and codes, decisions, kinds, etcd methods; never
user input such as object names or tenants.

The endpoint is bounded too (`serve`): it answers anyone who reaches its address, before any
authentication, and prometheus_client's own server gives every connection a thread and waits on
it for ever. 5,500 connections that sent half a request held 5,500 threads and descriptors of
the apiserver (+90 MiB) until the client closed them, eating the open files kept for etcd and
logs (`tke.internal.rpc.connections.RESERVED_FILES`) and then those the gRPC listeners were
fitted into. So at most `MAX_CONNECTIONS` connections are served at once (a new one beyond is
closed unanswered, counted in `tke_metrics_connections_refused_total`), and a connection whose
client sends or reads nothing for `IDLE_TIMEOUT` seconds is closed, with a debug line and no
traceback.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

GRPC_HANDLED = Counter(
    "tke_grpc_server_handled_total", "gRPC calls completed, by method and status code", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "tke_grpc_server_handling_seconds",
    "Time to complete unary gRPC calls (streams: to their end), by method",
    ["service", "method"],
    buckets=_LATENCY,
)
AUTHN = Counter("tke_authn_total", "Authentication outcomes", ["result"])
AUTHZ = Counter("tke_authz_decisions_total", "Authorization decisions", ["decision"])
STREAM_CHECKS = Counter(
    "tke_auth_stream_checks_total",
    "Open streams (watches) authenticated and authorized again, by result (allowed, ended)",
    ["result"],
)
AUDIT_DROPPED = Counter("tke_audit_events_dropped_total", "Audit events dropped by a full or failing sink", ["sink"])
WATCH_CLIENTS = Gauge("tke_watch_clients", "Open client watches, by kind", ["kind"])
WATCH_EVENTS = Counter("tke_watch_events_total", "Changes received from etcd by the watch fan-out, by kind", ["kind"])
WATCH_CLIENTS_ENDED_SLOW = Counter(
    "tke_watch_clients_too_slow_total", "Client watches ended because they fell too far behind", ["kind"]
)
WATCH_WINDOW_BYTES = Gauge(
    "tke_watch_window_bytes", "Stored bytes of the changes the watch fan-out keeps for resuming watches", ["kind"]
)
WATCH_CACHE_READS = Counter(
    "tke_watch_cache_reads_total",
    "Get and List reads by kind and by what answered them (cache or etcd)",
    ["kind", "source"],
)
WATCH_CACHE_OBJECTS = Gauge("tke_watch_cache_objects", "Objects the watch cache holds, by kind", ["kind"])
WATCHES_REFUSED = Counter(
    "tke_watches_refused_total", "Watches refused because their identity had the most it may open at once"
)
CATCHUPS_REFUSED = Counter(
    "tke_watch_catchups_refused_total",
    "Watches refused because they needed a catch-up from etcd's history beyond the catch-up limits",
)
WATCH_CATCHUPS = Gauge("tke_watch_catchups", "Watches catching up from etcd's history (each holds an etcd watch)")
REQUESTS_INFLIGHT_REFUSED = Counter(
    "tke_requests_inflight_refused_total", "Unary calls refused because the server served its maximum at once"
)
REQUESTS_INFLIGHT_SHARE_REFUSED = Counter(
    "tke_requests_inflight_share_refused_total",
    "Unary calls refused because their tenant, or the tenants together, had their share of the server in flight, "
    "or their tenant its bytes of answers not yet delivered",
)
ETCD_COMPACTIONS = Counter("tke_etcd_compactions_total", "Compactions of etcd's history this process made")
ETCD_LATENCY = Histogram(
    "tke_etcd_request_duration_seconds",
    "etcd round trips, by method and outcome",
    ["method", "outcome"],
    buckets=_LATENCY,
)
IPAM_POOL_ADDRESSES = Gauge(
    "tke_ipam_pool_addresses", "Addresses of an IPAM pool: its capacity, allocated and cooling down", ["pool", "state"]
)
QUEUE_DEPTH = Gauge("tke_controller_queue_depth", "Keys waiting in a controller's work queue", ["queue"])
QUEUE_RETRIES = Counter("tke_controller_queue_retries_total", "Keys queued again after a failed reconcile", ["queue"])
RECONCILE_SECONDS = Histogram(
    "tke_controller_reconcile_seconds",
    "Time of one reconcile, by queue and outcome",
    ["queue", "outcome"],
    buckets=_LATENCY,
)


METRICS_CONNECTIONS_REFUSED = Counter(
    "tke_metrics_connections_refused_total",
    "Connections to the metrics endpoint closed unanswered because it served its maximum at once",
)

# Connections the metrics endpoint serves at once: a scraper uses one; well inside the open files
# a process keeps for itself (tke.internal.rpc.connections.RESERVED_FILES).
MAX_CONNECTIONS = 16
# Of those, what one client address may hold: a client trickling bytes into its connections
# takes its own share, never the scraper's place (one peer is seen at accept, unlike gRPC's).
MAX_CONNECTIONS_PER_ADDRESS = 4
# Seconds a metrics connection may send or read nothing before it is closed.
IDLE_TIMEOUT = 10.0


class _Handler(WSGIRequestHandler):
    """A request handler whose socket gives up on a client that stalls (StreamRequestHandler
    sets `timeout` on the connection: every read and write of the request and the answer),
    and that writes no line per request (the scrapes would fill the log)."""

    timeout = IDLE_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _BoundedServer(ThreadingWSGIServer):
    """prometheus_client's thread-per-connection server with at most `max_connections` threads,
    `max_per_address` of them for one client address."""

    max_connections = MAX_CONNECTIONS
    max_per_address = MAX_CONNECTIONS_PER_ADDRESS

    def server_activate(self) -> None:
        self._places = threading.BoundedSemaphore(self.max_connections)
        self._lock = threading.Lock()
        self._by_address: dict[str, int] = {}
        super().server_activate()

    def _take(self, host: str) -> bool:
        with self._lock:
            held = self._by_address.get(host, 0)
            if held >= self.max_per_address or not self._places.acquire(blocking=False):
                return False
            self._by_address[host] = held + 1
            return True

    def _give_back(self, host: str) -> None:
        with self._lock:
            held = self._by_address.pop(host) - 1
            if held:
                self._by_address[host] = held
            self._places.release()

    def process_request(self, request: Any, client_address: Any) -> None:
        host = str(client_address[0])
        if not self._take(host):
            METRICS_CONNECTIONS_REFUSED.inc()
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._give_back(host)
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that stalled, reset or went away is a handled case: one debug line, no
        traceback (socketserver prints one to stderr for every such connection)."""
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            log.debug("metrics connection from %s closed: %s", client_address, err or type(err).__name__)
            return
        log.error("metrics request from %s failed", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._give_back(str(client_address[0]))


def serve(
    address: str,
    *,
    max_connections: int = MAX_CONNECTIONS,
    max_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
    idle_timeout: float = IDLE_TIMEOUT,
) -> WSGIServer | None:
    """Expose /metrics on `address` ("host:port"), serving at most `max_connections` connections
    at once, `max_per_address` of them from one client address, and closing one idle for
    `idle_timeout` seconds; empty disables it. Returns the server (its `shutdown` stops it),
    which runs in a daemon thread."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type(
        "MetricsServer",
        (_BoundedServer,),
        {"address_family": family, "max_connections": max_connections, "max_per_address": max_per_address},
    )
    handler = type("MetricsHandler", (_Handler,), {"timeout": idle_timeout})
    httpd: WSGIServer = make_server(host, int(port), make_wsgi_app(), server_class, handler_class=handler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s/metrics", address)
    return httpd
