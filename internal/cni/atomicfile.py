"""Crash-safe small files: written to a temporary name in the same directory, synced, renamed
over the target and the directory synced. A reader sees the old file or the new one, never a
part; readers take no lock. Temporary names start with '.', so listings skip them.

`durable=False` leaves out the directory's sync (one fsync of the two of a write, the only one
of a remove): the content is still synced before the rename, so after a crash a reader still
sees the old file or the new one whole, but which one is not certain. For the changes whose
undoing by a crash does no harm (the caller says why)."""

from __future__ import annotations

import os


def write_atomic(path: str, data: bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
    if durable:
        sync_dir(folder)


def remove(path: str, *, durable: bool = True) -> bool:
    """Remove `path`; False when it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if durable:
        sync_dir(os.path.dirname(path) or ".")
    return True


def sync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str) -> bytes | None:
    """The file's bytes; None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
