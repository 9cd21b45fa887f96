"""AWS API clients for the plugins, and what AWS's errors mean for a step.

Clients come from a boto3 session built from, in order: a credential of the controller's
configuration (an access key from environment variables, the tenant's `credential_ref`), or
the standard AWS credential chain (environment, shared files, instance or container roles).
The region comes from the object's spec, the provider's options or the chain; `endpoint_url`
points every client at another implementation of the API (tests use moto's server).

Retries are botocore's own: throttling (RequestLimitExceeded, Throttling, ...), 5xx and
connection errors are retried with exponential backoff and jitter inside each call (retry
mode "standard" or "adaptive", `max_attempts` in total). What is left when they are spent is a
TemporaryError: the step framework retries the step later. Errors that retrying cannot fix
(an invalid or unknown image, no capacity for the instance type, a refused credential or a
missing permission, an invalid parameter) are a PermanentError with AWS's code and message.

Calls run in a worker thread (boto3 is synchronous); a client is made once per region,
endpoint and credential and shared, which botocore allows. botocore's own debug logging,
which prints request bodies (user data with bootstrap tokens), is held at INFO.

A cancelled step (the object is being deleted, the step's timeout, the controller stopping)
stops at once, but a call it had in a thread goes on: RunInstances may make its instance after
the step is gone. `InFlight` keeps, per object, the calls still running in threads; the
providers run every step of an object inside `InFlight.of(uid)`, which first waits until the
object's earlier calls have ended, so a teardown (or a step run again) looks for what they made
only once it exists, found by the tags it was made with. The wait is bounded by how long one
call can last (`ClientOptions.call_bound`); past it the step fails temporarily and waits again
on its next attempt, never looking while a call of the object may still make something.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tke.internal.provider.credentials import Credential, Credentials
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.steps import Step

# Request bodies are logged by botocore at DEBUG: never, whatever the controller's level.
for _name in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_name).setLevel(logging.INFO)

log = logging.getLogger(__name__)

INSTALL_HINT = "the AWS plugins need boto3: pip install 'tke[aws]'"

# Codes no retry can fix. Codes ending in ".Malformed" or starting with "Invalid" and ending
# in ".NotFound" for images, key pairs, subnets and groups are permanent too (see permanent()).
PERMANENT_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "OptInRequired",
        "Blocked",
        "InsufficientInstanceCapacity",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "InvalidInstanceType",
        "Unsupported",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "InvalidParameter",
        "MissingParameter",
        "InvalidSubnet.Range",
        "InvalidSubnet.Conflict",
        "InvalidVpc.Range",
        "InvalidUserData.Malformed",
        "PrivateIpAddressLimitExceeded",
        "VpcLimitExceeded",
        "SecurityGroupLimitExceeded",
        "AddressLimitExceeded",
        "TooManyLoadBalancers",
        "ValidationError",
    }
)
_PERMANENT_NOT_FOUND = ("InvalidAMIID.", "InvalidKeyPair.", "InvalidSubnetID.", "InvalidGroup.", "InvalidVpcID.")


def permanent(code: str) -> bool:
    return code in PERMANENT_CODES or code.endswith(".Malformed") or code.startswith(_PERMANENT_NOT_FOUND)


class AWSError(Exception):
    """Raised by boto3 calls through `call` for an error AWS answered, before it becomes a
    step error; plugins that expect a code (a duplicate rule, an object already gone) read
    `code` and decide."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message

    def step_error(self) -> PermanentError | TemporaryError:
        if permanent(self.code):
            return PermanentError(str(self))
        return TemporaryError(str(self))


@dataclass(frozen=True)
class ClientOptions:
    """The options every AWS plugin takes."""

    region: str = ""
    # Another implementation of the API (moto's server in tests); empty: AWS's own endpoints.
    endpoint_url: str = ""
    # botocore's retry mode ("standard" or "adaptive", which also rate-limits the client
    # itself after throttling) and attempts per call, the first included.
    retry_mode: str = "standard"
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            raise ValueError(f"retry_mode must be 'standard', 'adaptive' or 'legacy', not {self.retry_mode!r}")
        if not 1 <= self.max_attempts <= 20:
            raise ValueError("max_attempts must be between 1 and 20")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be positive numbers of seconds")

    def call_bound(self) -> float:
        """The longest one call can take: every attempt connecting and waiting for its answer up
        to the timeouts, and botocore's backoff between attempts (at most 20 s each)."""
        return self.max_attempts * (self.connect_timeout + self.read_timeout) + (self.max_attempts - 1) * 20.0


class Clients:
    """boto3 clients by service, region and credential, made on first use and shared."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, str, str], Any] = {}
        # The calls of each object still running in threads, across its steps.
        self.in_flight = InFlight(options.call_bound())

    def region(self, wanted: str = "") -> str:
        return wanted or self.options.region

    def get(self, service: str, *, region: str = "", credential: Credential | None = None) -> Any:
        region = self.region(region)
        key_id = credential.aws_access_key_id if credential else ""
        key = (service, region, key_id, credential.aws_secret_access_key if credential else "")
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._make(service, region, credential)
                self._clients[key] = client
            return client

    def _make(self, service: str, region: str, credential: Credential | None) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise PermanentError(INSTALL_HINT) from None
        if credential is not None and credential.aws_access_key_id:
            session = boto3.session.Session(
                aws_access_key_id=credential.aws_access_key_id,
                aws_secret_access_key=credential.aws_secret_access_key,
                aws_session_token=credential.aws_session_token or None,
                region_name=region or None,
            )
        elif credential is not None:
            raise PermanentError(f"credential {credential.name!r} has no AWS access key (aws_access_key_id_env)")
        else:
            session = boto3.session.Session(region_name=region or None)
        o = self.options
        config = Config(
            retries={"mode": o.retry_mode, "max_attempts": o.max_attempts},
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            user_agent_extra="tke-platform",
        )
        try:
            return session.client(service, endpoint_url=o.endpoint_url or None, config=config)
        except Exception as err:  # NoRegionError and friends: the configuration is missing something
            raise PermanentError(f"cannot make an AWS {service} client: {err}") from None

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


# The InFlight and object key the calls of the running step count under (set by InFlight.of).
_OWNER: contextvars.ContextVar[tuple[InFlight, str] | None] = contextvars.ContextVar("tke_aws_owner", default=None)


class _Call:
    """One call in a thread: whether the thread took it up, or its caller dropped it first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False
        self.dropped = False


class InFlight:
    """The AWS calls of each object (by key, its uid) that still run in a worker thread,
    those of cancelled steps included. Used from the controller's event loop only (threads
    report their end through it)."""

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self._calls: dict[str, Counter[str]] = {}
        self._idle: dict[str, asyncio.Event] = {}

    def running(self, key: str) -> dict[str, int]:
        """The operations of `key` still running, with how many of each."""
        return dict(self._calls.get(key, {}))

    @contextlib.asynccontextmanager
    async def of(self, key: str) -> AsyncIterator[None]:
        """Run a step of the object `key`: wait until its earlier calls have ended, then count
        the calls the step makes under `key`."""
        await self.settled(key)
        token = _OWNER.set((self, key))
        try:
            yield
        finally:
            _OWNER.reset(token)

    async def settled(self, key: str) -> None:
        """Return once no call of `key` runs in a thread; TemporaryError after `bound` seconds."""
        if not self._calls.get(key):
            return
        log.info("%s: waiting for AWS calls made before to end: %s", key, _names(self._calls[key]))
        try:
            async with asyncio.timeout(self.bound):
                while self._calls.get(key):
                    await self._idle.setdefault(key, asyncio.Event()).wait()
        except TimeoutError:
            raise TemporaryError(
                f"AWS calls made before for this object still run after {self.bound:.0f}s: "
                f"{_names(self._calls.get(key, Counter()))}; what they make is looked for once they end",
                delay=5.0,
            ) from None

    async def run(self, key: str, operation: str, method: Callable[..., Any], params: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        state = _Call()

        def work() -> Any:
            with state.lock:
                if state.dropped:
                    return None
                state.started = True
            try:
                return method(**params)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(self._ended, key, operation)

        self._calls.setdefault(key, Counter())[operation] += 1
        try:
            return await asyncio.to_thread(work)
        except asyncio.CancelledError:
            with state.lock:
                if not state.started:  # still queued: it never runs
                    state.dropped = True
                    self._ended(key, operation)
                else:
                    log.info("%s: %s goes on in its thread after its step was cancelled", key, operation)
            raise

    def _ended(self, key: str, operation: str) -> None:
        calls = self._calls.get(key)
        if calls is None:
            return
        calls[operation] -= 1
        if calls[operation] <= 0:
            del calls[operation]
        if not calls:
            del self._calls[key]
            idle = self._idle.pop(key, None)
            if idle is not None:
                idle.set()


C = TypeVar("C")


def owned(in_flight: InFlight, key: Callable[[C], str], steps: Sequence[Step[C]]) -> list[Step[C]]:
    """The steps, each run inside `in_flight.of(key(ctx))`: after the object's earlier calls."""

    def wrapped(run: Callable[[C], Awaitable[None]]) -> Callable[[C], Awaitable[None]]:
        async def step(ctx: C) -> None:
            async with in_flight.of(key(ctx)):
                await run(ctx)

        step.__name__ = getattr(run, "__name__", "step")
        return step

    return [dataclasses.replace(s, run=wrapped(s.run)) for s in steps]


def _names(calls: Counter[str]) -> str:
    return ", ".join(f"{op}" + (f" (x{n})" if n > 1 else "") for op, n in sorted(calls.items()))


async def call(method: Callable[..., Any], **params: Any) -> Any:
    """Call a boto3 client method in a worker thread (counted in the running step's InFlight,
    if any). Raises AWSError for an error AWS answered (after botocore's retries),
    TemporaryError when AWS could not be reached, and PermanentError when no credentials or
    region could be found."""
    operation = getattr(method, "__name__", "call")
    owner = _OWNER.get()
    try:
        if owner is None:
            return await asyncio.to_thread(method, **params)
        inflight, key = owner
        return await inflight.run(key, operation, method, params)
    except Exception as err:
        raise translate(operation, err) from None


def translate(operation: str, err: Exception) -> Exception:
    from botocore import exceptions as bexc

    if isinstance(err, bexc.ClientError):
        error = err.response.get("Error", {})
        return AWSError(operation, str(error.get("Code", "Unknown")), str(error.get("Message", "")))
    if isinstance(err, bexc.NoCredentialsError | bexc.PartialCredentialsError | bexc.NoRegionError):
        return PermanentError(f"{operation}: {err}")
    if isinstance(err, bexc.ParamValidationError):
        return PermanentError(f"{operation}: {err}")
    if isinstance(err, bexc.BotoCoreError):  # endpoint unreachable, timeouts, bad answers
        return TemporaryError(f"{operation}: {err}")
    return err


async def step(method: Callable[..., Any], **params: Any) -> Any:
    """`call`, with every AWS error already a step error (PermanentError or TemporaryError)."""
    try:
        return await call(method, **params)
    except AWSError as err:
        raise err.step_error() from None


def credential_for(credentials: Credentials, ref: str) -> Credential | None:
    """The AWS credential named `ref` (None: the standard chain). `credentials` are those of
    the object's tenant only, so a reference can never reach another tenant's account."""
    if not ref:
        return None
    return credentials.get(ref)
