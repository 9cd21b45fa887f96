"""How a long-running platform process ends (tke-apiserver, tke-ipamd, tke-controller): SIGINT
(Ctrl-C) or SIGTERM (a supervisor) asks it to stop, and it stops gracefully, its clean-up run
to the end, instead of dying where it stands."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable


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
