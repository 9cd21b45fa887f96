"""`python -m tests.support.demo` (`make demo-cluster`): the demo, as root. DEMO_KEEP=1 keeps
it running until Ctrl-C, printing how to reach it."""

from __future__ import annotations

import argparse
import os
import sys

from tests.support.demo.run import WITHIN, run


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.demo", description=__doc__)
    p.add_argument("--masters", type=int, default=3, help="control-plane machines (3)")
    p.add_argument("--workers", type=int, default=2, help="worker machines (2)")
    p.add_argument("--within", type=float, default=WITHIN, help=f"seconds to wait for Running ({WITHIN:g})")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("make demo-cluster needs root: it creates network namespaces and runs sshd", file=sys.stderr)
        return 2
    if not 1 <= args.masters <= 9 or not 0 <= args.workers <= 9:
        print("--masters takes 1 to 9, --workers 0 to 9", file=sys.stderr)
        return 2
    keep = os.environ.get("DEMO_KEEP", "") not in ("", "0")
    return run(sys.stdout, masters=args.masters, workers=args.workers, within=args.within, keep=keep)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
