# PYTHON_ARGCOMPLETE_OK
"""tkectl: the operator's command line (see docs/tkectl.md, or `tkectl --help`).

Usage: tkectl COMMAND [TYPE] [NAME...] [options]
"""

from __future__ import annotations

import sys

from tke.internal.tkectl.cli import main

if __name__ == "__main__":
    sys.exit(main())
