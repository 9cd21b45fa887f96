"""Prometheus metrics of every server (prometheus_client), defined once here so that names and
labels stay consistent across binaries, and the HTTP endpoint that exposes them.

Label values are bounded: gRPC method names and codes, decisions, kinds, etcd methods; never
user input such as object names or tenants.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


def serve(address: str) -> None:
    """Expose /metrics on `address` ("host:port"); empty disables it."""
    if not address:
        return
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
    log.info("metrics on http://%s/metrics", address)
