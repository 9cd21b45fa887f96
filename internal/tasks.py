"""Stopping the background tasks a component started (a watch loop, an informer, a sink's
writer): cancel them and wait until they have ended, without losing the stopping caller's own
cancellation.

The pattern this replaces, `task.cancel()` then `await task` inside
`contextlib.suppress(asyncio.CancelledError)`, cannot tell the task's CancelledError from the
caller's: when the caller is itself cancelled while it waits (a second Ctrl-C, an enclosing
timeout, a TaskGroup aborting), the suppress swallows that too, and the caller goes on with its
clean-up as if nothing had happened, which can hang a stopping server.

Invariants of `cancel_and_wait`: when it returns or raises, every task given has ended; the
tasks' own cancellation is never raised; a cancellation of the caller is always raised (after
the tasks have ended, as a TaskGroup does); an exception a task ended with is raised as
`await task` would raise it, for the caller to handle as before.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel `tasks` (None and tasks that already ended are allowed) and wait until all have
    ended. Raises CancelledError if the caller was cancelled meanwhile: that cancellation is
    passed on to the tasks still running (as awaiting them directly would) and the wait goes
    on until they end. Otherwise raises the exception the first of `tasks` (in the order given)
    ended with, if any; the others are left to asyncio's report of unretrieved exceptions."""
    running = {t for t in tasks if t is not None and not t.done()}
    for task in running:
        task.cancel()
    cancelled: asyncio.CancelledError | None = None
    while running:
        try:
            # asyncio.wait, unlike `await task`, raises only the caller's own CancelledError,
            # never the tasks'.
            _, running = await asyncio.wait(running)
        except asyncio.CancelledError as err:
            cancelled = err
            for task in running:
                task.cancel()
    if cancelled is not None:
        raise cancelled
    for ended in tasks:
        if ended is not None and not ended.cancelled() and (error := ended.exception()) is not None:
            raise error
