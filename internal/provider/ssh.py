"""The command channel to machines: SSH (asyncssh) behind the Channel and Dialer Protocols.

- `exec` runs a shell command and returns its exit status and output; `run` raises
  CommandFailed (temporary: the next attempt may succeed) on a non-zero exit. A command reads
  no input (stdin is at end of file) and is ended on the machine, with every process it
  started, at its time limit (coreutils' timeout, which the machines need).
- `write_file` writes atomically (a temporary file renamed into place, parents created, mode
  set) over SFTP, so a reader never sees half a certificate; `read_file` and `exists` read.
- A machine is its tenant's, and so is everything it answers: a command's output (stdout and
  stderr together) is read as it comes, at most `max_output_bytes` of it; past that the
  command is ended and the call fails with OutputTooLarge (a PermanentError naming the option:
  the same command would print as much again). A file is read only up to `max_file_bytes`
  (OutputTooLarge past it), and every SFTP operation ends within `file_timeout` seconds.
  Output that is not UTF-8 is decoded with replacement characters, never refused.
- Connecting is retried a bounded number of times with backoff, then fails with
  TemporaryError; the step's own retry budget bounds the rest (no infinite SSH loops).
- Authentication failures and host key mismatches are PermanentError: retrying cannot help.
- Host keys are checked against a known_hosts file unless the operator turns checking off.
- The TCP connection goes to an address the address policy admitted, from the lookup that was
  checked (AddressPolicy.connect), never to what a second lookup of the name answers; host
  keys are still matched by the host as the target names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import posixpath
import shlex
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import asyncssh

from tke.internal.provider.addresses import AddressPolicy, AddressRefused
from tke.internal.provider.credentials import ConfiguredCredentials, Credential
from tke.internal.provider.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

MiB = 1 << 20
# Bytes read from a command's stdout or stderr at a time.
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class SSHOptions:
    # Seconds to set up a connection (TCP, key exchange, authentication).
    connect_timeout: float = 15.0
    # Connection attempts before the step's attempt fails (temporarily).
    connect_attempts: int = 3
    # Default timeout of one command, seconds.
    command_timeout: float = 600.0
    # Bytes of output (stdout and stderr together) one command may print: the controller holds
    # them in memory, and a machine is its tenant's to make print anything.
    max_output_bytes: int = 16 * MiB
    # Bytes of a file read from a machine (kubeconfigs, certificates, markers).
    max_file_bytes: int = 16 * MiB
    # Seconds one SFTP operation (a file's read or write, a stat) may take.
    file_timeout: float = 300.0
    # Check the machines' host keys against known_hosts_file ("" with checking on: refuse).
    host_key_checking: bool = True
    known_hosts_file: str = ""


@dataclass(frozen=True)
class Target:
    """A machine to reach: address, port, login user and the name of its credential, which is
    resolved in `tenant` (a reconcile's dialer sets it to its object's tenant, whatever the
    provider gave)."""

    host: str
    port: int = 22
    username: str = "root"
    credential_ref: str = ""
    tenant: str = ""

    def __str__(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Result:
    exit_status: int
    stdout: str
    stderr: str


class OutputTooLarge(PermanentError):
    """A command printed more than `ssh.max_output_bytes`, or a file is larger than
    `ssh.max_file_bytes`."""


class CommandFailed(TemporaryError):
    def __init__(self, target: Target, command: str, result: Result) -> None:
        tail = (result.stderr or result.stdout).strip()[-500:]
        super().__init__(f"{target}: `{_short(command)}` exited with {result.exit_status}: {tail}")
        self.result = result


def _short(command: str) -> str:
    return command if len(command) <= 120 else command[:117] + "..."


class Channel(Protocol):
    target: Target

    async def exec(
        self, command: str, *, time_limit: float | None = None, env: Mapping[str, str] | None = None
    ) -> Result: ...
    async def run(
        self, command: str, *, time_limit: float | None = None, env: Mapping[str, str] | None = None
    ) -> str: ...
    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None: ...
    async def copy_file(self, local_path: str, path: str, mode: int = 0o644) -> None: ...
    async def read_file(self, path: str) -> bytes: ...
    async def exists(self, path: str) -> bool: ...


class Dialer(Protocol):
    def connect(self, target: Target) -> contextlib.AbstractAsyncContextManager[Channel]: ...


# Seconds between SIGTERM and SIGKILL for a command past its time limit.
KILL_AFTER = 10
# timeout's exit status when it ended the command: 124 after SIGTERM, 128+9 after SIGKILL.
TIMED_OUT = (124, 137)


def bounded(command: str, limit: float) -> str:
    """`command`, run by the login shell under coreutils' timeout, which ends the command's
    whole process group (the shell and every process of its pipelines and background jobs)
    at `limit` seconds. Closing the SSH channel would not: sshd leaves a non-interactive
    session's processes running, and refuses to signal them for root logins. A command left
    running (an apt-get holding dpkg's lock) would block the step's next attempt."""
    return f'exec timeout --kill-after={KILL_AFTER} {limit:g} "${{SHELL:-/bin/sh}}" -c {shlex.quote(command)}'


# The first bytes a command prints to stderr: its process id on the machine (the login shell's,
# which `exec` makes coreutils timeout's), so a cancelled command can be ended there. Read off
# stderr by _Output, never shown. A record separator first: no command's output starts so.
PID_MARK = b"\x1etke-pid "


def announced(command: str) -> str:
    """`command` (a `bounded` one) after the shell prints PID_MARK and its process id to stderr."""
    return f"printf '\\036tke-pid %s\\n' \"$$\" >&2; {command}"


def end_command(pid: int) -> str:
    """What ends the command whose timeout has process id `pid`, on the machine: SIGTERM to
    timeout, which passes it to the command's whole process group (and SIGKILL after
    KILL_AFTER seconds). Only while that process is still a timeout: an id of a command that
    ended may be another process's by now."""
    return f'[ "$(cat /proc/{pid}/comm 2>/dev/null)" = timeout ] && kill -TERM {pid}; true'


def with_env(command: str, env: Mapping[str, str] | None) -> str:
    """`command` with environment variables set by the shell (sshd's AcceptEnv is rarely open)."""
    if not env:
        return command
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"export {exports}; {command}"


class SSHChannel:
    def __init__(self, conn: asyncssh.SSHClientConnection, target: Target, options: SSHOptions) -> None:
        self.conn = conn
        self.target = target
        self.options = options
        self._sftp: asyncssh.SFTPClient | None = None

    async def exec(
        self, command: str, *, time_limit: float | None = None, env: Mapping[str, str] | None = None
    ) -> Result:
        limit = time_limit or self.options.command_timeout
        started = time.monotonic()
        try:
            # stdin at end of file: a command that reads it (a prompt, a program given no
            # input file) fails or finishes at once instead of waiting out its time limit.
            # Bytes, not text: asyncssh's strict decoding ends the channel at the first byte
            # that is not UTF-8, which looked like an exit status of 255 with no output.
            process = await self.conn.create_process(
                announced(with_env(bounded(command, limit), env)), stdin=asyncssh.DEVNULL, encoding=None
            )
        except (asyncssh.Error, OSError) as err:
            raise TemporaryError(f"{self.target}: `{_short(command)}`: {err}") from None
        output = _Output(self.options.max_output_bytes)
        try:
            # The machine ends the command at `limit`; waiting longer only covers a machine
            # that stopped answering. The wait is bounded here, not by asyncssh's timeout
            # (asyncio.wait_for, which loses a cancellation that lands as the command ends).
            # The output is read as it comes, never more than max_output_bytes of it
            # (asyncssh's wait() keeps all of it, however much the machine prints).
            async with asyncio.timeout(limit + KILL_AFTER + 10):
                await output.collect(process)
                await process.wait_closed()
        except _TooMuch:
            process.close()
            raise OutputTooLarge(
                f"{self.target}: `{_short(command)}` printed more than {self.options.max_output_bytes} bytes "
                f"(tke-controller's ssh.max_output_bytes) and was ended; its last output: {output.tail()}"
            ) from None
        except (asyncssh.Error, OSError, TimeoutError) as err:
            process.close()
            why = "timed out" if isinstance(err, TimeoutError) else str(err)
            raise TemporaryError(f"{self.target}: `{_short(command)}`: {why}") from None
        except asyncio.CancelledError:
            # The step was cancelled (its object is being deleted, the controller stops):
            # closing the channel does not end the command on the machine (see `bounded`), so
            # it is ended there, on a session of its own, before the cancellation goes on.
            process.close()
            if output.pid is not None and process.exit_status is None:
                await self._end(output.pid, command)
            raise
        status = process.exit_status if process.exit_status is not None else 255
        if status in TIMED_OUT and time.monotonic() - started >= limit:
            raise TemporaryError(f"{self.target}: `{_short(command)}` timed out after {limit:g}s")
        return Result(status, _text(bytes(output.stdout)), _text(bytes(output.stderr)))

    async def _end(self, pid: int, command: str) -> None:
        """End the command whose timeout is `pid`, within connect_timeout; a machine that does
        not answer keeps it until its own time limit ends it."""
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                ender = await self.conn.create_process(end_command(pid), stdin=asyncssh.DEVNULL, encoding=None)
                await ender.wait_closed()
        except (asyncssh.Error, OSError, TimeoutError) as err:
            log.info("%s: `%s` was cancelled and could not be ended: %s", self.target, _short(command), err)

    async def run(self, command: str, *, time_limit: float | None = None, env: Mapping[str, str] | None = None) -> str:
        result = await self.exec(command, time_limit=time_limit, env=env)
        if result.exit_status != 0:
            raise CommandFailed(self.target, command, result)
        return result.stdout

    async def _client(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            try:
                async with asyncio.timeout(self.options.file_timeout):
                    self._sftp = await self.conn.start_sftp_client()
            except TimeoutError:
                raise TemporaryError(f"{self.target}: cannot start SFTP: {self._late()}") from None
            except (asyncssh.Error, OSError) as err:
                raise TemporaryError(f"{self.target}: cannot start SFTP: {err}") from None
        return self._sftp

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        sftp = await self._client()
        tmp = f"{path}.tke-{uuid.uuid4().hex[:8]}"
        try:
            async with asyncio.timeout(self.options.file_timeout):
                await sftp.makedirs(posixpath.dirname(path) or "/", exist_ok=True)
                async with sftp.open(tmp, "wb", asyncssh.SFTPAttrs(permissions=mode)) as f:
                    await f.write(data)
                await sftp.chmod(tmp, mode)
                await sftp.posix_rename(tmp, path)
        except (asyncssh.Error, OSError, TimeoutError) as err:
            with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
                async with asyncio.timeout(self.options.connect_timeout):
                    await sftp.remove(tmp)
            why = self._late() if isinstance(err, TimeoutError) else str(err)
            raise TemporaryError(f"{self.target}: cannot write {path}: {why}") from None

    async def copy_file(self, local_path: str, path: str, mode: int = 0o644) -> None:
        """Copy a file of the controller's machine (an operator's binary, a bundle) to `path`,
        atomically like write_file."""
        await self.write_file(path, await asyncio.to_thread(_read_local, local_path), mode)

    async def read_file(self, path: str) -> bytes:
        sftp = await self._client()
        limit = self.options.max_file_bytes
        try:
            async with asyncio.timeout(self.options.file_timeout), sftp.open(path, "rb") as f:
                # One byte past the limit says the file is larger; never more than that is
                # held, whatever size the file claims or reaches while it is read.
                data = await f.read(limit + 1)
        except asyncssh.SFTPNoSuchFile:
            raise FileNotFoundError(path) from None
        except TimeoutError:
            raise TemporaryError(f"{self.target}: cannot read {path}: {self._late()}") from None
        except (asyncssh.Error, OSError) as err:
            raise TemporaryError(f"{self.target}: cannot read {path}: {err}") from None
        if len(data) > limit:
            raise OutputTooLarge(
                f"{self.target}: {path} is larger than {limit} bytes (tke-controller's ssh.max_file_bytes)"
            )
        return data if isinstance(data, bytes) else data.encode()

    async def exists(self, path: str) -> bool:
        sftp = await self._client()
        try:
            async with asyncio.timeout(self.options.file_timeout):
                return bool(await sftp.exists(path))
        except TimeoutError:
            raise TemporaryError(f"{self.target}: cannot stat {path}: {self._late()}") from None
        except (asyncssh.Error, OSError) as err:
            raise TemporaryError(f"{self.target}: cannot stat {path}: {err}") from None

    def _late(self) -> str:
        return f"not done within {self.options.file_timeout:g}s (tke-controller's ssh.file_timeout)"

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        self.conn.close()
        with contextlib.suppress(Exception):
            await self.conn.wait_closed()


def _read_local(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise PermanentError(f"cannot read {path} to copy it: {err.strerror}") from None


class _TooMuch(Exception):
    """A command's output passed its byte limit."""


class _Output:
    """A command's stdout and stderr, kept while together they stay within `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stdout = bytearray()
        self.stderr = bytearray()
        # The command's process id on the machine, from the PID_MARK line starting stderr.
        self.pid: int | None = None

    async def collect(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        """Read stdout and stderr to their ends; the first failure (_TooMuch, the
        connection's) is raised as it is, and the other reader is stopped."""
        readers = [
            asyncio.ensure_future(self._read(process.stdout, self.stdout)),
            asyncio.ensure_future(self._read(process.stderr, self.stderr, marked=True)),
        ]
        try:
            for reader in asyncio.as_completed(readers):
                await reader
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _read(self, stream: asyncssh.SSHReader[bytes], into: bytearray, *, marked: bool = False) -> None:
        if marked:
            await self._read_mark(stream, into)
        while chunk := await stream.read(_CHUNK):
            self._keep(chunk, into)

    async def _read_mark(self, stream: asyncssh.SSHReader[bytes], into: bytearray) -> None:
        """Read the PID_MARK line off the start of `stream` (what follows it is output)."""
        head = b""
        while b"\n" not in head and len(head) < len(PID_MARK) + 24:
            chunk = await stream.read(len(PID_MARK) + 24 - len(head))
            if not chunk:
                break
            head += chunk
            if not PID_MARK.startswith(head[: len(PID_MARK)]):
                break  # not the mark (a shell that printed before it): all of it is output
        line, newline, rest = head.partition(b"\n")
        if newline and line.startswith(PID_MARK) and line[len(PID_MARK) :].isdigit():
            self.pid = int(line[len(PID_MARK) :])
            head = rest
        self._keep(head, into)

    def _keep(self, chunk: bytes, into: bytearray) -> None:
        if chunk:
            room = self.limit - len(self.stdout) - len(self.stderr)
            into += chunk[: max(0, room)]
            if len(chunk) > room:
                raise _TooMuch

    def tail(self) -> str:
        """The end of what the command printed (of stderr, when it printed any there)."""
        return _text(bytes((self.stderr or self.stdout)[-500:])).strip()


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class SSHDialer:
    credentials: ConfiguredCredentials
    options: SSHOptions = field(default_factory=SSHOptions)
    # Where a tenant's objects may send us (tke.internal.provider.addresses): every connection
    # goes to an address it admitted, from the same lookup, also for objects stored before
    # tke-apiserver checked it.
    addresses: AddressPolicy = field(default_factory=AddressPolicy)

    @contextlib.asynccontextmanager
    async def connect(self, target: Target) -> AsyncIterator[Channel]:
        channel = await self._open(target)
        try:
            yield channel
        finally:
            await channel.close()

    def _known_hosts(self) -> str | tuple[list[str], list[str], list[str]] | None:
        if not self.options.host_key_checking:
            return None  # asyncssh: no host key check
        if not self.options.known_hosts_file:
            # Trust nothing: no host key, no CA key (and none revoked). Not (): asyncssh reads
            # that as "the user's ~/.ssh/known_hosts", whatever the controller's user keeps there.
            return ([], [], [])
        return self.options.known_hosts_file

    async def _open(self, target: Target) -> SSHChannel:
        if err := self.addresses.host_refusal(target.host):
            raise PermanentError(f"{target}: {err}")
        cred = self.credentials.read(target.tenant, target.credential_ref) if target.credential_ref else None
        keys = []
        if cred is not None and cred.private_key:
            try:
                keys.append(asyncssh.import_private_key(cred.private_key, cred.passphrase or None))
            except (asyncssh.KeyImportError, ValueError) as err:
                raise PermanentError(f"credential {target.credential_ref!r}: bad private key: {err}") from None
        delay = 0.5
        last = ""
        for attempt in range(1, self.options.connect_attempts + 1):
            try:
                # Bounded here, not by asyncssh's connect_timeout: that is asyncio.wait_for,
                # which returns the connection when the caller is cancelled in the loop turn
                # the connection is made in, and the cancellation is lost.
                async with asyncio.timeout(self.options.connect_timeout):
                    # The socket is connected here, to an address the policy admitted from the
                    # same lookup (a name looked up again could answer otherwise: DNS
                    # rebinding); asyncssh still gets the host as written, for known_hosts.
                    sock = await self.addresses.connect(target.host, target.port)
                    conn = await self._handshake(target, sock, keys, cred)
                return SSHChannel(conn, target, self.options)
            except AddressRefused as err:
                raise PermanentError(f"{target}: {err}") from None
            except asyncssh.PermissionDenied as err:
                raise PermanentError(f"{target}: authentication failed: {err.reason}") from None
            except asyncssh.HostKeyNotVerifiable as err:
                raise PermanentError(f"{target}: host key not trusted: {err.reason}") from None
            except (asyncssh.Error, OSError, TimeoutError) as err:
                last = str(err) or type(err).__name__
                log.info("ssh %s: attempt %d/%d failed: %s", target, attempt, self.options.connect_attempts, last)
            if attempt < self.options.connect_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        raise TemporaryError(f"{target}: cannot connect after {self.options.connect_attempts} attempts: {last}")

    async def _handshake(
        self, target: Target, sock: socket.socket, keys: list[asyncssh.SSHKey], cred: Credential | None
    ) -> asyncssh.SSHClientConnection:
        """SSH over `sock` (asyncssh owns it from here; closed when the handshake fails)."""
        try:
            return await asyncssh.connect(
                target.host,
                target.port,
                sock=sock,
                username=target.username,
                client_keys=keys or None,
                password=(cred.password or None) if cred is not None else None,
                known_hosts=self._known_hosts(),
                connect_timeout=None,
                agent_path=None,  # never the operator's own agent keys
                config=[],  # nor their ~/.ssh/config
                preferred_auth="publickey,password,keyboard-interactive",
            )
        except BaseException:
            sock.close()
            raise


class CachingDialer:
    """The dialer of one reconcile of one tenant's object: every target's credential is
    resolved in that tenant, and one connection per machine is reused for the length of the
    reconcile (a plan's steps connect to the same machines again and again; each SSH handshake
    costs a round of key exchange). A connection that saw an error is dropped; `aclose` closes
    the rest."""

    def __init__(self, inner: Dialer, tenant: str) -> None:
        self.inner = inner
        self.tenant = tenant
        self._open: dict[Target, tuple[contextlib.AbstractAsyncContextManager[Channel], Channel]] = {}

    @contextlib.asynccontextmanager
    async def connect(self, target: Target) -> AsyncIterator[Channel]:
        target = dataclasses.replace(target, tenant=self.tenant)
        entry = self._open.get(target)
        if entry is None:
            manager = self.inner.connect(target)
            entry = (manager, await manager.__aenter__())
            self._open[target] = entry
        try:
            yield entry[1]
        except BaseException:
            if self._open.pop(target, None) is not None:
                with contextlib.suppress(Exception):
                    await entry[0].__aexit__(None, None, None)
            raise

    async def aclose(self) -> None:
        entries, self._open = list(self._open.values()), {}
        for manager, _ in entries:
            with contextlib.suppress(Exception):
                await manager.__aexit__(None, None, None)
