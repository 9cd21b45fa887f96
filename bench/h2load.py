"""h2load (Debian's nghttp2-client) as a gRPC load generator for unary calls whose request is
the same every time (Get, the empty call, etcd's Range): it sends the framed request over
HTTP/2 with prior knowledge, keeps `in_flight` calls open, and logs every call's latency.

h2load counts HTTP responses, not gRPC statuses: the caller checks the statuses elsewhere
(the apiserver's metrics), and `run` reports any non-200 response as an error."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.stats import percentile


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return struct.pack(">BI", 0, len(message)) + message


def ensure() -> str:
    """The h2load binary; installs Debian's nghttp2-client when it is missing (only `make bench`
    gets here)."""
    found = shutil.which("h2load")
    if found:
        return found
    print("h2load missing: installing Debian's nghttp2-client with apt-get", flush=True)
    sudo = [] if _root() else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=False)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "nghttp2-client"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which("h2load")
    if not found:
        raise RuntimeError("h2load is still missing after installing nghttp2-client")
    return found


def _root() -> bool:
    return os.geteuid() == 0


@dataclass
class Result:
    qps: float
    p50_ms: float
    p99_ms: float
    calls: int
    errors: int


def shape(in_flight: int) -> tuple[int, int]:
    """(connections, streams per connection) for `in_flight` concurrent calls: up to 4
    connections, as a few clients multiplexing calls would."""
    connections = min(in_flight, 4)
    return connections, max(1, in_flight // connections)


def run(
    address: str,
    path: str,
    message: bytes,
    in_flight: int,
    seconds: float,
    *,
    headers: dict[str, str] | None = None,
    warm_up: float = 0.5,
    connections: int = 0,
) -> Result:
    """`connections`: spread the calls in flight over this many connections (default: `shape`)."""
    binary = ensure()
    if connections:
        streams = max(1, in_flight // connections)
    else:
        connections, streams = shape(in_flight)
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(grpc_frame(message))
        log = Path(tmp) / "log"
        argv = [
            binary,
            f"http://{address}{path}",
            "-d", str(body),
            "-c", str(connections),
            "-m", str(streams),
            "-t", "1",
            "-D", f"{int(seconds * 1000)}ms",
            f"--warm-up-time={int(warm_up * 1000)}ms",
            f"--log-file={log}",
            "-H", "content-type: application/grpc",
            "-H", "te: trailers",
        ]  # fmt: skip
        for key, value in (headers or {}).items():
            argv += ["-H", f"{key}: {value}"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + warm_up + 60, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"h2load failed ({out.returncode}): {out.stderr.strip() or out.stdout[-500:]}")
        latencies: list[float] = []
        errors = 0
        for line in log.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 3:
                continue
            if fields[1] != "200":
                errors += 1
            latencies.append(int(fields[2]) / 1000.0)
    # Calls completed per second over the measured duration (h2load logs the main phase only).
    return Result(
        qps=len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        calls=len(latencies),
        errors=errors,
    )
