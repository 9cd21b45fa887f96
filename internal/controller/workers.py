"""Workers: a bounded number of tasks taking keys from a work queue and reconciling them.

A reconcile returns None (done until something changes) or seconds after which to look
again. An exception retries the key with its exponential backoff; success forgets the
backoff. The queue guarantees that a key is never reconciled by two workers at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc

from tke.internal.controller.queue import ShutDown, WorkQueue
from tke.internal.controller.status import StaleStatus
from tke.internal.metrics import QUEUE_DEPTH, QUEUE_RETRIES, RECONCILE_SECONDS

log = logging.getLogger(__name__)

Reconcile = Callable[[str], Awaitable[float | None]]


async def worker(name: str, queue: WorkQueue, reconcile: Reconcile) -> None:
    label = name.rsplit("-", 1)[0]  # the queue's name, without the worker's number
    task = asyncio.current_task()
    while True:
        if task is not None and task.cancelling():
            # A cancellation that a reconcile caught and did not raise again still counts: a
            # stopping controller must not keep a worker waiting for keys.
            raise asyncio.CancelledError
        try:
            key = await queue.get()
        except ShutDown:
            return
        QUEUE_DEPTH.labels(label).set(len(queue))
        started = time.perf_counter()
        outcome = "error"
        try:
            again = await reconcile(key)
        except asyncio.CancelledError:
            queue.done(key)
            raise
        except StaleStatus as err:
            outcome = "stale"
            log.info("%s: %s; again shortly", name, err)
            queue.add_after(key, 0.2)
        except grpc.aio.AioRpcError as err:
            delay = queue.retry(key)
            QUEUE_RETRIES.labels(label).inc()
            log.warning(
                "%s %s: apiserver said %s: %s; retry in %.1fs", name, key, err.code().name, err.details(), delay
            )
        except Exception:
            delay = queue.retry(key)
            QUEUE_RETRIES.labels(label).inc()
            log.exception("%s %s: reconcile failed; retry in %.1fs", name, key, delay)
        else:
            outcome = "ok"
            queue.forget(key)
            if again is not None:
                queue.add_after(key, again)
        RECONCILE_SECONDS.labels(label, outcome).observe(time.perf_counter() - started)
        queue.done(key)


async def run_workers(name: str, queue: WorkQueue, reconcile: Reconcile, count: int) -> None:
    async with asyncio.TaskGroup() as group:
        for i in range(max(1, count)):
            group.create_task(worker(f"{name}-{i}", queue, reconcile))
