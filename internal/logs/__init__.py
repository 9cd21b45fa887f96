"""Process logging set-up shared by the binaries."""

from __future__ import annotations

import logging
import sys


def setup(level: str = "info") -> None:
    """Log to stderr, one line per record, with the time and the logger's name."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # gRPC's and etcd client's own chatter is rarely what an operator needs.
    logging.getLogger("grpc").setLevel(logging.WARNING)
