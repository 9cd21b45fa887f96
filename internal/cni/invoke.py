"""Running another CNI plugin as a runtime does: found by its type in CNI_PATH, executed with the
CNI_* environment and its configuration on stdin, its stdout read as a result or a CNI error.

`Exec` is the seam: `RawExec` starts real processes (posix_spawn, no subprocess import: plugins
are started once per container and every millisecond of start-up counts); tests use a fake.
The child's stderr is ours, so its diagnostics reach the runtime's log unchanged.
"""

from __future__ import annotations

import os

from tke.internal.cni import jsonio as json
from tke.internal.cni.errors import DELEGATE_FAILED, INVALID_NETWORK_CONFIG, IO_FAILURE, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Protocol


if TYPE_CHECKING:

    class Exec(Protocol):
        def find(self, plugin_type: str, path: Sequence[str]) -> str:
            """The executable for `plugin_type`; CNIError (code 7) when no directory has it."""
            ...

        def run(self, executable: str, config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any] | None:
            """Run one verb (CNI_COMMAND in `env`). Returns the parsed stdout for ADD (and VERSION),
            None otherwise; raises the plugin's CNIError when it fails."""
            ...


def find_plugin(plugin_type: str, path: Sequence[str]) -> str:
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise CNIError(INVALID_NETWORK_CONFIG, f"invalid plugin type {plugin_type!r}")
    for folder in path:
        candidate = os.path.join(folder, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(INVALID_NETWORK_CONFIG, f'failed to find plugin "{plugin_type}" in path {list(path)}')


def spawn(executable: str, stdin: bytes, env: Mapping[str, str]) -> tuple[int, bytes]:
    """Run `executable` with `stdin`; returns (exit status, stdout). CNI plugins read all of
    stdin before they write, so writing first and then reading cannot deadlock."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        pid = os.posix_spawn(
            executable,
            [executable],
            dict(env),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, in_r, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_CLOSE, in_w),
                (os.POSIX_SPAWN_CLOSE, out_r),
            ],
        )
    except OSError:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
        raise
    os.close(in_r)
    os.close(out_w)
    try:
        view = memoryview(stdin)
        while view:
            view = view[os.write(in_w, view) :]
    except BrokenPipeError:
        pass  # it exited without reading; its status says why
    finally:
        os.close(in_w)
    chunks = []
    try:
        while chunk := os.read(out_r, 65536):
            chunks.append(chunk)
    finally:
        os.close(out_r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


class RawExec:
    """Real processes."""

    def find(self, plugin_type: str, path: Sequence[str]) -> str:
        return find_plugin(plugin_type, path)

    def run(self, executable: str, config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any] | None:
        name = os.path.basename(executable)
        command = env.get("CNI_COMMAND", "")
        try:
            code, out = spawn(executable, json.dumps(config).encode(), env)
        except OSError as err:
            raise CNIError(IO_FAILURE, f"cannot execute plugin {name}", str(err)) from None
        if code != 0:
            try:
                data: Any = json.loads(out) if out.strip() else None
            except ValueError:
                data = None
            raise CNIError.from_json(data, f"plugin {name} failed ({command}) with exit status {code}")
        if command not in ("ADD", "VERSION"):
            return None
        try:
            result = json.loads(out)
        except ValueError:
            raise CNIError(DELEGATE_FAILED, f"plugin {name} printed an unreadable {command} result") from None
        if not isinstance(result, dict):
            raise CNIError(DELEGATE_FAILED, f"plugin {name} printed a {command} result that is not an object")
        return result


def supported_versions(runner: Exec, executable: str, env: Mapping[str, str]) -> list[str]:
    """Ask a plugin which specification versions it supports (VERSION)."""
    answer = runner.run(executable, {"cniVersion": "1.0.0"}, {**env, "CNI_COMMAND": "VERSION"})
    versions = (answer or {}).get("supportedVersions")
    if not isinstance(versions, list):
        raise CNIError(DELEGATE_FAILED, f"plugin {os.path.basename(executable)} gave no supportedVersions")
    return [str(v) for v in versions]
