"""run_until_stopped in a process of its own: SIGTERM and SIGINT stop the work with its clean-up
run to the end; work that ends by itself ends the wait, and its error is raised. (Waiting with
no work is what tke-apiserver does: tests/apiserver/test_binary.py stops it with SIGTERM.)"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

PROGRAM = """
import asyncio, sys
from tke.internal.daemon import run_until_stopped

async def work():
    try:
        print("ready", flush=True)
        if sys.argv[1] == "fail":
            raise RuntimeError("work failed")
        await asyncio.sleep(60)
    finally:
        await asyncio.sleep(0.1)  # clean-up that itself awaits
        print("cleaned", flush=True)

async def main():
    await run_until_stopped(work())
    print("returned", flush=True)

asyncio.run(main())
"""


async def run(mode: str, sig: signal.Signals | None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROGRAM, mode, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        # The work starts after the handlers are installed: from "ready" on, a signal stops it.
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        if sig is not None:
            proc.send_signal(sig)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_work_after_its_clean_up(sig: signal.Signals) -> None:
    code, out, _ = await run("work", sig)
    assert (code, out) == (0, "cleaned\nreturned\n")


async def test_work_that_fails_ends_the_wait_with_its_error() -> None:
    code, out, err = await run("fail", None)
    assert code == 1 and out == "cleaned\n" and "RuntimeError: work failed" in err


def test_a_tuned_collector_runs_less_often_and_skips_the_start_up_objects() -> None:
    # In a fresh interpreter: the test process's own collector stays as it is.
    check = (
        "import gc\n"
        "from tke.internal.daemon import YOUNG_COLLECTION_EVERY, tune_collector\n"
        "default = gc.get_threshold()\n"
        "tune_collector()\n"
        "assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *default[1:]), gc.get_threshold()\n"
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count()\n"
        "assert YOUNG_COLLECTION_EVERY > default[0]\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
