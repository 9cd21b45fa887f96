"""The bounds of what a runtime may hand the CNI plugins: each environment variable they read, the
network configuration on stdin, and the nesting of any JSON they parse.

Anything beyond a bound is refused before it is used, with the specification's code: an
environment variable is code 4 (invalid environment variables), the configuration code 6
(decoding failure). So an over-long container id never reaches a file name (the record
`<id>=<ifname>.json` must fit the file system's 255 bytes), an over-long path never reaches
open(2), and a deeply nested document never reaches a recursive encoder; the answer is never
101 (internal error). The values are constants of this module; docs/cni.md lists them.
"""

from __future__ import annotations

from tke.internal.cni.errors import INVALID_ENVIRONMENT, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# The network configuration on stdin. Configurations are a few KiB; libcni passes a whole
# .conflist, with prevResult and runtimeConfig, still far below this.
MAX_CONFIG_BYTES = 1 << 20
# Arrays and objects inside one another in any JSON the plugins read (a configuration, a
# delegate's result, a record). Real configurations nest about 8 deep.
MAX_JSON_DEPTH = 64
PATH_MAX = 4095  # bytes of a path, without its terminating NUL (Linux's PATH_MAX is 4096)

# Bytes each variable the plugins read may have (UTF-8). Runtimes' container ids are 64 hex
# digits; interface names are Linux's 15 bytes (skel.valid_ifname checks the rest of their
# syntax); a node name is a DNS name.
ENVIRONMENT_LIMITS: dict[str, int] = {
    "CNI_COMMAND": 16,
    "CNI_CONTAINERID": 128,
    "CNI_IFNAME": 15,
    "CNI_NETNS": PATH_MAX,
    "CNI_PATH": 32 * 1024,
    "CNI_ARGS": 16 * 1024,
    "TKE_NODE_NAME": 253,
    "NODE_NAME": 253,
}


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise code 4 naming the first variable beyond its bound (its value is not repeated: it
    may be megabytes). Every directory of CNI_PATH is a path and bounded as one."""
    for name, limit in ENVIRONMENT_LIMITS.items():
        value = environ.get(name)
        if value is None:
            continue
        size = len(value.encode("utf-8", "surrogateescape"))
        if size > limit:
            raise CNIError(INVALID_ENVIRONMENT, f"{name} is too long", f"{size} bytes; at most {limit}")
    for directory in environ.get("CNI_PATH", "").split(":"):
        size = len(directory.encode("utf-8", "surrogateescape"))
        if size > PATH_MAX:
            raise CNIError(
                INVALID_ENVIRONMENT, "a directory of CNI_PATH is too long", f"{size} bytes; at most {PATH_MAX}"
            )
