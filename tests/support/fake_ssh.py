"""Fakes of the command channel (tke.internal.provider.ssh): machines as dictionaries of
files that answer commands by their text, for provider tests without SSH."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from tke.internal.provider.ssh import Channel, CommandFailed, Result, Target, with_env


class FakeChannel:
    """The fake: a dictionary of files, and answers to commands by their text (exit 0 and no
    output for any other command)."""

    def __init__(
        self, target: Target, files: dict[str, bytes] | None = None, answers: dict[str, Result] | None = None
    ) -> None:
        self.target = target
        self.files = files if files is not None else {}
        self.commands: list[str] = []
        self.answers: dict[str, Result] = answers if answers is not None else {}

    async def exec(
        self, command: str, *, time_limit: float | None = None, env: Mapping[str, str] | None = None
    ) -> Result:
        self.commands.append(with_env(command, env))
        return self.answers.get(command, Result(0, "", ""))

    async def run(self, command: str, *, time_limit: float | None = None, env: Mapping[str, str] | None = None) -> str:
        result = await self.exec(command, time_limit=time_limit, env=env)
        if result.exit_status != 0:
            raise CommandFailed(self.target, command, result)
        return result.stdout

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.files[path] = data

    async def copy_file(self, local_path: str, path: str, mode: int = 0o644) -> None:
        self.files[path] = Path(local_path).read_bytes()

    async def read_file(self, path: str) -> bytes:
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    async def exists(self, path: str) -> bool:
        return path in self.files


class FakeDialer:
    """Fake machines by host; each keeps its files across connections. `answers` apply to
    every machine."""

    def __init__(self, answers: dict[str, Result] | None = None) -> None:
        self.machines: dict[str, FakeChannel] = {}
        self.answers = answers if answers is not None else {}

    @contextlib.asynccontextmanager
    async def connect(self, target: Target) -> AsyncIterator[Channel]:
        channel = self.machines.setdefault(target.host, FakeChannel(target, answers=self.answers))
        yield channel
