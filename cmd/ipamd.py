"""tke-ipamd: the IP address management daemon of the node's containers.

Usage: tke-ipamd [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tke.internal import logs
from tke.internal.config.loader import ConfigError, load
from tke.internal.daemon import INTERRUPTED, cannot_run, tune_collector
from tke.internal.ipamd.config import IpamdConfig
from tke.internal.ipamd.server import ConfigurationError, serve
from tke.internal.plugin.loader import PluginError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tke-ipamd", description="IP address management for containers.")
    parser.add_argument("--config", help="TOML configuration file (see deploy/ipamd/ipamd.toml)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config, IpamdConfig)
    except ConfigError as err:
        print(f"tke-ipamd: {err}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format)
    tune_collector()
    try:
        asyncio.run(serve(config))
    except (PluginError, ConfigurationError) as err:
        print(f"tke-ipamd: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"tke-ipamd: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the process took SIGINT over: nothing to clean up yet
        return INTERRUPTED
    except Exception as err:
        return cannot_run("tke-ipamd", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
