"""`tke-apiserver --workers N`: N apiserver processes serving one TCP port, for more than one
core's worth of calls (a Python process uses one).

The first process (the supervisor) serves nothing: it starts N workers, each this same binary
with `--worker I` (a fresh interpreter, not a fork: grpc does not survive a fork), and watches
them. Each worker is a whole apiserver of its own (its own etcd connection and one etcd watch
per kind, its own watch hubs, audit lanes and limits: `max_requests_inflight` and
`max_watches_per_identity` hold per worker) and binds the TCP port with SO_REUSEPORT, so the
kernel spreads new connections over the workers (a connection stays with the worker that
accepted it). What is not shared that way:
- the unix socket (a unix socket cannot be bound twice): worker 0 serves it;
- the metrics endpoint: worker I serves it on the configured port + I, so each worker's
  counters are its own (scrape every port).

Stopping: SIGTERM or SIGINT to the supervisor is passed to every worker; each stops gracefully
(`shutdown_grace`), and the supervisor exits 0 once all have, or kills those still running
`shutdown_grace` + 10 s later (exit 1).

A worker that dies: the server is no longer what was configured, so the supervisor stops the
other workers and exits with the dead worker's code (1 if it was 0 or a signal), saying which
worker died and how. Restarting is the job of what started the server (systemd's
Restart=on-failure, a Kubernetes pod), as for a single process: it sees one failure, not a
worker crashing in a loop behind a healthy-looking port. A worker that cannot start (etcd
unreachable, a bad plugin) ends the start the same way, with its own message and code.
Workers get SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG), so none is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("tke.apiserver")

PR_SET_PDEATHSIG = 1
_POLL = 0.2
_KILL_AFTER = 10.0


def _die_with_parent() -> None:
    """In the worker, before it runs: SIGTERM when the supervisor goes away."""
    # (Not Linux: no prctl; the supervisor's own stop still reaches the workers.)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _described(code: int) -> str:
    return f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def supervise(worker_argv: Sequence[str], workers: int, grace: float) -> int:
    """Run `workers` processes `worker_argv + ["--worker", I]` until a signal or until one of
    them ends; returns the supervisor's exit code."""
    stopping_since: float | None = None
    code = 0

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping_since
        if stopping_since is None:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, workers)
            stopping_since = time.monotonic()
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

    children: list[subprocess.Popen[bytes]] = []
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(workers):
            if stopping_since is not None:
                break
            children.append(
                subprocess.Popen([*worker_argv, "--worker", str(index)], preexec_fn=_die_with_parent)  # noqa: PLW1509 - only a prctl
            )
        log.info("tke-apiserver: %d workers (pids %s)", workers, " ".join(str(c.pid) for c in children))
        running = dict(enumerate(children))
        while running:
            time.sleep(_POLL)
            for index, child in list(running.items()):
                status = child.poll()
                if status is None:
                    continue
                del running[index]
                if stopping_since is None:
                    print(
                        f"tke-apiserver: worker {index} (pid {child.pid}) {_described(status)}: stopping the others",
                        file=sys.stderr,
                        flush=True,
                    )
                    code = status if status > 0 else 1
                    stop(signal.SIGTERM, None)
                elif status != 0 and code == 0:
                    code = status if status > 0 else 1
            if stopping_since is not None and time.monotonic() - stopping_since > grace + _KILL_AFTER:
                for index, child in running.items():
                    print(f"tke-apiserver: worker {index} (pid {child.pid}) did not stop: killed", file=sys.stderr)
                    child.kill()
                    child.wait()
                return 1
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for child in children:  # only on an error of the supervisor itself
            if child.poll() is None:
                child.kill()
                child.wait()
