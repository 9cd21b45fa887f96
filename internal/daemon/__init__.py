"""How a long-running platform process ends (tke-apiserver, tke-ipamd, tke-controller): SIGINT
(Ctrl-C) or SIGTERM (a supervisor) asks it to stop, and it stops gracefully, its clean-up run
to the end, instead of dying where it stands; and how it says why it could not run: one line,
never a traceback (`cannot_run`); and the garbage collector's settings for a server
(`tune_collector`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Awaitable

log = logging.getLogger("tke")

# Exit code of a process stopped by SIGINT before it could stop gracefully (as a shell says).
INTERRUPTED = 130


def cannot_run(prog: str, err: BaseException) -> int:
    """For a binary's main: report an error nothing else handled as one line on stderr (the
    traceback only in a debug log) and return the exit code 1. An operator learns what failed
    (a file that is missing, a refused connection) without reading Python."""
    print(f"{prog}: cannot run: {type(err).__name__}: {err}", file=sys.stderr)
    log.debug("%s failed", prog, exc_info=err)
    return 1


# Allocations of container objects between two collections of the youngest generation
# (Python's default is 700). A served call allocates a few hundred (coroutines' futures, tasks,
# messages, dicts) that reference counting frees, and the default had the collector run every
# few calls: ~8% of a Get's CPU in the apiserver. Ten times more keeps a cycle's garbage a few
# milliseconds longer.
YOUNG_COLLECTION_EVERY = 7000


def tune_collector() -> None:
    """For a server's main, after its imports: collect young objects less often, and leave out
    of every collection the objects that exist now (modules, classes: they live as long as the
    process)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)


async def run_until_stopped(work: Awaitable[None] | None = None) -> None:
    """Run `work` (or just wait) until SIGINT or SIGTERM. The signal cancels `work`, whose own
    clean-up then runs before this returns; if `work` ends first, so does this, with its error.
    Signals after `work` ended are ignored: the caller's shutdown that follows is not cut short
    (a second signal during `work`'s own clean-up cancels that clean-up, as a second Ctrl-C
    should)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work if work is not None else loop.create_future())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not task.cancelled() or (current is not None and current.cancelling()):
            raise  # not the signal: this caller itself is being cancelled
