"""The skeleton every CNI plugin of ours runs in: `cni_main({"ADD": add, "DEL": delete, ...})`.

It reads the CNI_* environment and the configuration on stdin, checks what the specification
requires for the verb (variables, container id and interface name syntax, a supported
cniVersion, GC and STATUS only from 1.1.0) and the bounds of tke.internal.cni.limits (every
variable's length: code 4; the configuration's size and nesting: code 6), calls the verb's
function and prints its result or the error JSON on stdout. Nothing else is ever printed on
stdout; diagnostics go to stderr as one line each, never a traceback.
"""

from __future__ import annotations

import os
import sys

from tke.internal.cni import jsonio as json
from tke.internal.cni.args import parse_args
from tke.internal.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    CNIError,
)
from tke.internal.cni.limits import MAX_CONFIG_BYTES, check_environment
from tke.internal.cni.record import Record
from tke.internal.cni.version import SUPPORTED, at_least, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import IO, Any

VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
# The variables each verb requires (the Go skel's table; CNI_ARGS is always optional).
REQUIRED: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
}
ID_PUNCTUATION = frozenset("_.-")
VALID_ATTACHMENTS = ("cni.dev/valid-attachments", "cni.dev/attachments")


class Request(Record):
    """One invocation: the verb, the CNI_* variables and the parsed configuration."""

    command: str
    config: dict[str, Any]
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""
    path: tuple[str, ...] = ()
    environ: Mapping[str, str] = os.environ

    @property
    def cni_version(self) -> str:
        return str(self.config.get("cniVersion", ""))

    @property
    def network_name(self) -> str:
        return str(self.config.get("name", ""))

    def arg_pairs(self) -> dict[str, str]:
        return parse_args(self.args)


if TYPE_CHECKING:
    Handler = Callable[[Request], "dict[str, Any] | None"]


def warn(message: str) -> None:
    """One diagnostic line on stderr, prefixed with the program's name."""
    try:
        sys.stderr.write(f"{os.path.basename(sys.argv[0] or 'cni')}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def valid_container_id(cid: str) -> bool:
    """Alphanumeric first, then alphanumerics, '_', '.' or '-' (the specification's rule)."""
    return (
        bool(cid)
        and cid[0].isascii()
        and cid[0].isalnum()
        and all((c.isascii() and c.isalnum()) or c in ID_PUNCTUATION for c in cid)
    )


def valid_ifname(name: str) -> bool:
    """Linux's rules as the specification repeats them: 1-15 bytes, not '.' or '..', no '/',
    ':' or whitespace."""
    return 0 < len(name.encode()) < 16 and name not in (".", "..") and not any(c in "/:" or c.isspace() for c in name)


def valid_attachments(config: Mapping[str, Any]) -> list[dict[str, str]]:
    """GC's list of attachments still in use (`cni.dev/valid-attachments`; libcni also sends it
    as `cni.dev/attachments`, the name an early 1.1 draft used). GC removes every attachment not
    listed, so a configuration without the list is refused rather than read as "none is in use"
    (which would remove every live container's); `null`, which libcni sends when its runtime
    has no attachment in use (Go's nil list), is the empty list."""
    for key in VALID_ATTACHMENTS:
        if key in config:
            value = config[key]
            break
    else:
        raise CNIError(
            INVALID_NETWORK_CONFIG,
            f"GC needs {VALID_ATTACHMENTS[0]}, the attachments still in use: without it every attachment would "
            "be removed",
        )
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(a, dict) and isinstance(a.get("containerID"), str) and isinstance(a.get("ifname"), str)
        for a in value
    ):
        raise CNIError(INVALID_NETWORK_CONFIG, f"{VALID_ATTACHMENTS[0]}: expected a list of {{containerID, ifname}}")
    return [{"containerID": a["containerID"], "ifname": a["ifname"]} for a in value]


def cni_main(
    handlers: Mapping[str, Handler],
    *,
    versions: Sequence[str] = SUPPORTED,
    about: str = "",
    environ: Mapping[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Run one CNI invocation; returns the exit status (0 or 1)."""
    env = os.environ if environ is None else environ
    out = sys.stdout if stdout is None else stdout
    version = versions[-1]
    try:
        command = env.get("CNI_COMMAND", "")
        if command == "VERSION":
            data = _read_config(stdin, optional=True)
            asked = str(data.get("cniVersion", ""))
            _emit(out, {"cniVersion": asked if asked in versions else version, "supportedVersions": list(versions)})
            return 0
        if not command:
            if about:
                warn(about)
            raise CNIError(INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing")
        check_environment(env)
        if command not in handlers:
            raise CNIError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {command}")
        missing = [k for k in REQUIRED.get(command, ()) if not env.get(k)]
        if missing:
            raise CNIError(INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
        cid = env.get("CNI_CONTAINERID", "")
        if "CNI_CONTAINERID" in REQUIRED[command] and not valid_container_id(cid):
            raise CNIError(INVALID_ENVIRONMENT, "invalid characters in CNI_CONTAINERID", cid)
        ifname = env.get("CNI_IFNAME", "")
        if "CNI_IFNAME" in REQUIRED[command] and not valid_ifname(ifname):
            raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_IFNAME", ifname)
        config = _read_config(stdin, optional=False)
        configured = config.get("cniVersion")
        if not isinstance(configured, str) or not configured:
            raise CNIError(INVALID_NETWORK_CONFIG, "network configuration has no cniVersion")
        asked = configured
        try:
            parse(asked)
        except ValueError:
            raise CNIError(INCOMPATIBLE_VERSION, "incompatible CNI versions", f"config is {asked!r}") from None
        version = asked
        if asked not in versions:
            raise CNIError(
                INCOMPATIBLE_VERSION,
                "incompatible CNI versions",
                f'config is "{asked}", plugin supports {list(versions)}',
            )
        if command in ("GC", "STATUS") and not at_least(asked, "1.1.0"):
            raise CNIError(INCOMPATIBLE_VERSION, f"config version does not allow {command}", asked)
        request = Request(
            command=command,
            config=config,
            container_id=cid,
            netns=env.get("CNI_NETNS", ""),
            ifname=ifname,
            args=env.get("CNI_ARGS", ""),
            path=tuple(p for p in env.get("CNI_PATH", "").split(os.pathsep) if p),
            environ=env,
        )
        result = handlers[command](request)
        if result is not None:
            _emit(out, {"cniVersion": version, **{k: v for k, v in result.items() if k != "cniVersion"}})
        return 0
    except CNIError as err:
        warn(f"{env.get('CNI_COMMAND', '')} failed: {err} (code {err.code})")
        _emit(out, err.to_json(version))
        return 1
    except OSError as err:
        warn(f"I/O failure: {err}")
        _emit(out, CNIError(IO_FAILURE, "I/O failure", str(err)).to_json(version))
        return 1
    except Exception as err:
        # Never a traceback: a one-line reason for the operator, a CNI error for the runtime.
        warn(f"internal error: {type(err).__name__}: {err}")
        _emit(out, CNIError(INTERNAL, "internal error", f"{type(err).__name__}: {err}").to_json(version))
        return 1
    except KeyboardInterrupt:
        _emit(out, CNIError(INTERNAL, "interrupted").to_json(version))
        return 1


def _read_config(stdin: IO[bytes] | None, *, optional: bool) -> dict[str, Any]:
    source = sys.stdin.buffer if stdin is None else stdin
    try:
        raw = b"" if optional and source.isatty() else source.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise CNIError(IO_FAILURE, "error reading from stdin", str(err)) from None
    if optional and not raw.strip():
        return {}
    if len(raw) > MAX_CONFIG_BYTES:
        if optional:
            return {}
        raise CNIError(
            DECODE_FAILURE, "failed to decode the network configuration", f"larger than {MAX_CONFIG_BYTES} bytes"
        )
    try:
        data = json.loads(raw)
    except ValueError as err:
        if optional:
            return {}
        raise CNIError(DECODE_FAILURE, "failed to decode the network configuration", str(err)) from None
    if not isinstance(data, dict):
        if optional:
            return {}
        raise CNIError(DECODE_FAILURE, "failed to decode the network configuration", "not a JSON object")
    return data


def _emit(out: IO[str], obj: dict[str, Any]) -> None:
    try:
        out.write(json.dumps(obj))
        out.write("\n")
        out.flush()
    except (OSError, ValueError):
        pass  # the runtime went away; nothing left to tell it


def main(handlers: Mapping[str, Handler], *, versions: Sequence[str] = SUPPORTED, about: str = "") -> None:
    """A console script's body: run and exit with the status."""
    sys.exit(cni_main(handlers, versions=versions, about=about))
