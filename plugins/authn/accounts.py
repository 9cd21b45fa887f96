"""Built-in accounts (private clouds): users kept in etcd with scrypt password hashes, Login
issuing signed expiring tokens, API keys for machines, and the AuthService that manages them.
Entry point `accounts` of `tke.authn`.

Options:
- `secret_env` (required): environment variable holding the token signing secret (>= 32
  bytes); apiservers that share it accept each other's tokens.
- `token_ttl` (seconds, default 43200): lifetime of a Login token.
- `bootstrap_admin` and `bootstrap_password_env`: create this platform administrator at start
  when it does not exist, with the password from that environment variable. There is no
  default password: without the variable the server refuses to start.
- `login_user_burst` (default 5) and `login_user_interval` (seconds, default 10): failed Login
  attempts allowed at once per user name, and how often one more is regained;
  `login_client_burst` (20) and `login_client_interval` (1.0) the same per client address;
  `login_tracked` (10000) the most user names and addresses remembered each. A burst of 0
  switches that limit off. Beyond it Login is RESOURCE_EXHAUSTED with a RetryInfo, before any
  password is checked. The limits are per apiserver.
- `max_revocations_per_user` (default 100): the most revoked tokens one user keeps stored; see
  the revocation bound below.
- `password_hashes` (default 1): password hashes and checks computed at once, each on a thread
  of its own lane (tke.internal.auth.password_lane), so hashing never takes more than that many
  cores; `password_queue` (32) the most calls waiting for one; `password_user_share` (2) and
  `password_tenant_share` (8) the most calls of one user name, and of one tenant or (Login, with
  the per-client limit on) one client address, hashing or waiting at once. Beyond them Login,
  CreateUser and ChangePassword are RESOURCE_EXHAUSTED (TOO_MANY_PASSWORD_HASHES) with a
  RetryInfo, before any hashing. Platform administrators' calls, and the bootstrap
  administrator's creation, wait their turn and are never refused. Per apiserver process.

Invariants:
- Authentication reads only memory: records under <prefix>/auth/ are mirrored (users, API
  key hashes, revoked token ids), so tokens and keys are verified without an etcd read, and a
  revocation, deletion or disablement written by any apiserver takes effect everywhere as
  soon as the watch delivers it.
- A token is valid while its signature holds, it has not expired, its id is not revoked, its
  user exists with the uid it was issued for and is enabled, and it was issued after the user's
  last password change or disablement. An API key works while its user exists with the uid it
  was made for and is enabled: a user created again under a deleted user's name is another user.
- Every call that acts on a user (create, update, disable, delete, change its password, make,
  list or delete its API keys) passes one rule, `AuthService._acted_on`: the caller reaches the
  user's tenant (else NOT_FOUND, as for a user that does not exist), may do the verb there, and
  holds every privilege the user holds (tke.internal.auth.authority), on the very record the
  write replaces.
- Secrets (passwords, tokens, API key secrets) are never logged or returned, except a new
  token or API key to the caller who asked for it.
- Every password hash and check runs on the password lane, counted against the caller's shares:
  a Login against the user name asked for, the tenant of that user when it exists and the
  client address; an authenticated call against the caller's user and tenant (not the user it
  acts on). No call hashes on the default thread pool.
- Users and API keys count against their tenant's quotas (quotas.users, quotas.apikeys,
  quotas.bytes; tke.internal.apiserver.quota), with the apiserver's quotas on: the mirror's
  watch counts them (the tenant read from the record: a user's, the one an API key records
  from its user), and CreateUser, CreateAPIKey and a write that grows a user hold their share
  before writing (RESOURCE_EXHAUSTED QUOTA_EXCEEDED past it, nothing written). Platform
  administrators' writes, and the bootstrap administrator's creation, are never refused.
- Revocations are bounded per user, and Logout is never refused: a user holding
  `max_revocations_per_user` live revocations (those of this process's Logouts in flight
  included) who logs out again gets `not_before` moved to now instead, which ends every
  session of the user issued until now (the side effect: logging out very often logs the
  user out everywhere), and the leases of the revocations that covers are revoked, removing
  them. So one user never stores more than that many revocation records and leases.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc
from tke.internal.apiserver.quota import KindUsage
from tke.internal.auth.authn import AuthenticationError, Credentials
from tke.internal.auth.authority import Authority
from tke.internal.auth.authz import Attributes, Decision
from tke.internal.auth.identity import DEFAULT_TENANT, EXPIRES, PLATFORM_ADMINS, Identity, current_identity
from tke.internal.auth.password_lane import PasswordLane, Share
from tke.internal.auth.passwords import DUMMY_HASH, hash_password, password_error, verify_password
from tke.internal.auth.throttle import Limit, LoginThrottle, client_address
from tke.internal.auth.tokens import PREFIX as TOKEN_PREFIX
from tke.internal.auth.tokens import TokenError, TokenSigner
from tke.internal.meta.labels import dns1123_label_error
from tke.internal.meta.pagetoken import PageTokens
from tke.internal.meta.pagetoken import TokenError as PageTokenError
from tke.internal.rpc import errors
from tke.internal.storage.lease import LeasedStore
from tke.internal.storage.mirror import Followers, Mirror
from tke.internal.storage.store import (
    AlreadyExists,
    Conflict,
    Guard,
    Item,
    NotFound,
    PreconditionFailed,
    StorageError,
)

log = logging.getLogger("tke.auth.accounts")

API_KEY_PREFIX = "tkeak."
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 500, 5000
TOKEN_ID = "token-id"


@dataclass
class UserRecord:
    name: str
    uid: str
    tenant: str
    groups: list[str]
    display_name: str
    disabled: bool
    password_hash: str
    created: float
    # Tokens issued before this time (a password change, a disablement) are refused.
    not_before: float = 0.0


@dataclass
class APIKeyRecord:
    id: str
    user: str
    secret_hash: str
    description: str
    created: float
    expires: float = 0.0
    # The uid of the user it was made for. Keys stored before uids were recorded have none:
    # those belong to a user created before the key (a later namesake cannot own them).
    user_uid: str = ""
    # Its user's tenant, whose quotas (quotas.apikeys, quotas.bytes) count it. Keys stored
    # before it was recorded count against their user's tenant.
    tenant: str = ""

    def belongs_to(self, user: UserRecord) -> bool:
        return self.user == user.name and (self.user_uid == user.uid if self.user_uid else self.created >= user.created)


@dataclass
class Revocation:
    expires: float
    # Whose token it is, when it was issued, and the lease that removes the record when the
    # token expires (revoked early once the user's not_before covers the token). Revocations
    # stored before these were recorded have none and just expire.
    user: str = ""
    issued: float = 0.0
    lease: int = 0


_REVOCATION_FIELDS = frozenset(f.name for f in fields(Revocation))


@dataclass
class _Records:
    users: dict[str, UserRecord] = field(default_factory=dict)
    keys: dict[str, APIKeyRecord] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _sha256(secret: str) -> str:
    # API key secrets are 32 random bytes: a fast hash is enough, unlike passwords.
    return hashlib.sha256(secret.encode()).hexdigest()


class Accounts:
    def __init__(
        self,
        context: Any,
        *,
        secret_env: str,
        token_ttl: int = 43_200,
        bootstrap_admin: str = "",
        bootstrap_password_env: str = "",
        login_user_burst: int = 5,
        login_user_interval: float = 10.0,
        login_client_burst: int = 20,
        login_client_interval: float = 1.0,
        login_tracked: int = 10_000,
        max_revocations_per_user: int = 100,
        password_hashes: int = 1,
        password_queue: int = 32,
        password_tenant_share: int = 8,
        password_user_share: int = 2,
    ) -> None:
        secret = os.environ.get(secret_env, "")
        if not secret:
            raise ValueError(f"accounts: environment variable {secret_env} (the token signing secret) is not set")
        self.signer = TokenSigner(secret.encode())
        # ListUsers' continue tokens: sealed with a key of their own, derived from the secret
        # every apiserver shares, so that a list goes on at any of them.
        self.page_tokens = PageTokens(hmac.new(secret.encode(), b"tke ListUsers page tokens", hashlib.sha256).digest())
        self.token_ttl = token_ttl
        if max_revocations_per_user < 1:
            raise ValueError("accounts: max_revocations_per_user must be 1 or more")
        self.max_revocations = max_revocations_per_user
        # Live revocation keys by user (from the mirror), and Logouts of this process writing one.
        self._revoked_by: dict[str, set[str]] = {}
        self._revoking: dict[str, int] = {}
        self.throttle = LoginThrottle(
            Limit(login_user_burst, login_user_interval),
            Limit(login_client_burst, login_client_interval),
            login_tracked,
        )
        if min(password_hashes, password_tenant_share, password_user_share) < 1 or password_queue < 0:
            raise ValueError(
                "accounts: password_hashes, password_tenant_share and password_user_share must be 1 or more, "
                "password_queue 0 or more"
            )
        # Its threads start with the first hash.
        self.lane = PasswordLane(password_hashes, password_queue, password_tenant_share, password_user_share)
        self._context = context
        self.store: LeasedStore = context.store
        self.root = f"{context.prefix}/auth/"
        self.bootstrap_admin = bootstrap_admin
        self.bootstrap_password = ""
        if bootstrap_admin:
            if not bootstrap_password_env or not os.environ.get(bootstrap_password_env):
                raise ValueError(
                    "accounts: bootstrap_admin needs bootstrap_password_env naming a set environment variable "
                    "(there is no default password)"
                )
            self.bootstrap_password = os.environ[bootstrap_password_env]
            if err := password_error(self.bootstrap_password):
                raise ValueError(f"accounts: the bootstrap password {err}")
        # Users and API keys count against their tenant's quotas (quotas.users, quotas.apikeys,
        # quotas.bytes), fed by the mirror's watch; revocations are bounded per user instead.
        quota_kind = getattr(context, "quota_kind", None)
        self.users_usage: KindUsage | None = None
        self.keys_usage: KindUsage | None = None
        follower: Followers | None = None
        if quota_kind is not None:
            self.users_usage = quota_kind("users", "user", self._key("users", ""), _user_tenant)
            self.keys_usage = quota_kind("apikeys", "API key", self._key("apikeys", ""), self._key_tenant)
            follower = Followers(self.users_usage, self.keys_usage)
        self._mirror: Mirror[Any] = Mirror(
            self.store,
            self.root,
            self._decode,
            on_change=self._changed,
            on_reset=self._reindex,
            follower=follower,
        )

    # -- records ------------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.root}{kind}/{name}"

    def _decode(self, item: Item) -> Any:
        kind = item.key[len(self.root) :].split("/", 1)[0]
        data = json.loads(item.value)
        if kind == "users":
            return UserRecord(**data)
        if kind == "apikeys":
            return APIKeyRecord(**data)
        # A revocation's key is what revokes its token: a record whose fields this version does not
        # all know (a newer apiserver's) still revokes, its unknown fields left out. (A user or API
        # key record this version cannot read is skipped: its tokens and keys then fail, closed.)
        return Revocation(**{name: value for name, value in data.items() if name in _REVOCATION_FIELDS})

    def _key_tenant(self, item: Item) -> str | None:
        """An API key's tenant: recorded in it, or (older keys) its user's, when it has one."""
        data = json.loads(item.value)
        if tenant := data.get("tenant"):
            return str(tenant)
        user = self._user(str(data.get("user", "")))
        return user.tenant if user is not None else None

    def _changed(self, key: str, before: Any, after: Any) -> None:
        if isinstance(before, Revocation) and before.user:
            keys = self._revoked_by.get(before.user)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._revoked_by[before.user]
        if isinstance(after, Revocation) and after.user:
            self._revoked_by.setdefault(after.user, set()).add(key)
        self._tell_streams(before, after)

    def _tell_streams(self, before: Any, after: Any) -> None:
        """Have the open streams of the user a change concerns checked again now: a user record
        changed (disabled, deleted, a new password or groups), an API key changed or deleted, a
        token revoked (a revocation going away changes nothing)."""
        record = after if after is not None else before
        if isinstance(record, UserRecord):
            self._access_changed(user=record.name)
        elif isinstance(record, APIKeyRecord):
            self._access_changed(user=record.user)
        elif isinstance(after, Revocation):
            # (Revocations stored before they named their user: anyone's.)
            self._access_changed(user=after.user or None)

    def _access_changed(self, user: str | None = None) -> None:
        """`user`'s open streams (None: everyone's) are checked again now (PluginContext)."""
        changed = getattr(self._context, "access_changed", None)
        if changed is not None:
            changed(user=user)

    def _reindex(self) -> None:
        self._revoked_by = {}
        for key, value in self._mirror.items.items():
            if isinstance(value, Revocation) and value.user:
                self._revoked_by.setdefault(value.user, set()).add(key)
        # A fresh list (the history was compacted): anything may have changed.
        self._access_changed()

    def _records(self) -> _Records:
        out = _Records()
        for key, value in self._mirror.items.items():
            kind, _, name = key[len(self.root) :].partition("/")
            if kind == "users":
                out.users[name] = value
            elif kind == "apikeys":
                out.keys[name] = value
            elif kind == "revoked":
                out.revoked.add(name)
        return out

    def _user(self, name: str) -> UserRecord | None:
        value = self._mirror.items.get(self._key("users", name))
        return value if isinstance(value, UserRecord) else None

    @property
    def authority(self) -> Authority:
        authority: Authority | None = self._context.authority
        if authority is None:
            raise RuntimeError("the accounts plugin must be built by tke.internal.auth.chain.build")
        return authority

    def target_identity(self, record: UserRecord) -> Identity:
        """Who `record` is, as the rule of acting on users compares it: the bootstrap
        administrator stays the platform's whatever its record says."""
        groups = tuple(record.groups)
        if record.name == self.bootstrap_admin and PLATFORM_ADMINS not in groups:
            groups += (PLATFORM_ADMINS,)
        return Identity(user=record.name, uid=record.uid, groups=groups, tenant_id=record.tenant)

    async def _write_new(
        self,
        kind: str,
        name: str,
        record: Any,
        lease: int = 0,
        guards: tuple[Guard, ...] = (),
        *,
        counted: tuple[KindUsage | None, str] = (None, ""),
        check: bool = True,
    ) -> None:
        """Create the record; `counted`: the kind's usage and the tenant whose quotas admit it
        first (RESOURCE_EXHAUSTED past them, unless not `check`; nothing written then)."""
        key, value = self._key(kind, name), json.dumps(asdict(record)).encode()
        usage, tenant = counted
        hold = usage.hold(tenant, 1, len(key) + len(value), check=check) if usage is not None else None
        revision = 0
        try:
            item = await self.store.create(key, value, lease=lease, guards=guards)
            revision = item.mod_revision
        finally:
            if usage is not None:
                usage.done(hold, revision)
        await self._mirror.wait_for(revision)

    async def start(self) -> None:
        await self._mirror.start()
        if self.bootstrap_admin and self._user(self.bootstrap_admin) is None:
            record = self._new_user(
                self.bootstrap_admin, DEFAULT_TENANT, [PLATFORM_ADMINS], "", self.bootstrap_password
            )
            try:
                # Counted, never refused: the platform needs its administrator.
                hashed = await self.lane.run((), _hashed, record, exempt=True)
                counted = (self.users_usage, record.tenant)
                await self._write_new("users", record.name, hashed, counted=counted, check=False)
                log.info("created the bootstrap platform administrator %r", self.bootstrap_admin)
            except AlreadyExists:
                pass  # another apiserver made it first
        self.bootstrap_password = ""

    async def stop(self) -> None:
        await self._mirror.stop()
        self.lane.close()

    def services(self) -> list[tuple[str, Any]]:
        servicer = AuthService(self)

        def add(server: grpc.aio.Server) -> None:
            accounts_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)

        return [(accounts_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name, add)]

    @staticmethod
    def _new_user(
        name: str, tenant: str, groups: list[str], display_name: str, password: str, *, disabled: bool = False
    ) -> UserRecord:
        # password_hash holds the clear password only until _hashed replaces it, off the loop.
        return UserRecord(name, secrets.token_hex(8), tenant, groups, display_name, disabled, password, time.time())

    # -- authentication -----------------------------------------------------------------------

    def _identity(self, user: UserRecord, extra: dict[str, tuple[str, ...]]) -> Identity:
        return Identity(user=user.name, uid=user.uid, groups=tuple(user.groups), tenant_id=user.tenant, extra=extra)

    async def authenticate(self, credentials: Credentials) -> Identity | None:
        token = credentials.bearer_token
        if token.startswith(TOKEN_PREFIX):
            try:
                claims = self.signer.verify(token)
            except TokenError as err:
                raise AuthenticationError(str(err)) from None
            if self._key("revoked", claims.token_id) in self._mirror.items:
                raise AuthenticationError("token has been revoked: log in again")
            user = self._user(claims.subject)
            if user is None or user.uid != claims.uid or user.disabled or claims.issued_at < user.not_before:
                raise AuthenticationError("token is no longer valid: log in again")
            return self._identity(
                user,
                {
                    TOKEN_ID: (claims.token_id,),
                    EXPIRES: (str(claims.expires_at),),
                    "token-issued": (repr(claims.issued_at),),
                },
            )
        if token.startswith(API_KEY_PREFIX):
            parts = token.split(".")
            if len(parts) != 4:
                raise AuthenticationError("malformed API key")
            key_id = f"{parts[1]}.{parts[2]}"
            record = self._mirror.items.get(self._key("apikeys", key_id))
            if not isinstance(record, APIKeyRecord) or not hmac.compare_digest(record.secret_hash, _sha256(parts[3])):
                raise AuthenticationError("unknown API key")
            if record.expires and time.time() >= record.expires:
                raise AuthenticationError("API key has expired")
            user = self._user(record.user)
            if user is None or not record.belongs_to(user) or user.disabled:
                raise AuthenticationError("API key's user is gone or disabled")
            extra: dict[str, tuple[str, ...]] = {"api-key": (key_id,)}
            if record.expires:
                extra[EXPIRES] = (repr(record.expires),)
            return self._identity(user, extra)
        return None


def _user_tenant(item: Item) -> str | None:
    return str(json.loads(item.value).get("tenant", "")) or None


def _hashed(record: UserRecord) -> UserRecord:
    record.password_hash = hash_password(record.password_hash)
    return record


def _user_message(record: UserRecord) -> accounts_pb2.User:
    user = accounts_pb2.User()
    user.metadata.name = record.name
    user.metadata.uid = record.uid
    user.metadata.tenant_id = record.tenant
    user.metadata.creation_timestamp.CopyFrom(_ts(record.created))
    user.spec.display_name = record.display_name
    user.spec.groups.extend(record.groups)
    user.spec.disabled = record.disabled
    return user


def _key_message(record: APIKeyRecord) -> accounts_pb2.APIKey:
    key = accounts_pb2.APIKey(id=record.id, user=record.user, description=record.description)
    key.created_at.CopyFrom(_ts(record.created))
    if record.expires:
        key.expires_at.CopyFrom(_ts(record.expires))
    return key


_USER_PATHS = ("spec", "spec.display_name", "spec.groups", "spec.disabled")
_RETRIES = 5
# What a refused Login is told of its shares (the caller is nobody yet).
_LOGIN_SHARE = "this user name or its tenant"
T = TypeVar("T")
_MAX_KEY_TTL = 10 * 365 * 86_400  # ten years: far beyond any use, and inside a Timestamp


def _spec_violations(spec: accounts_pb2.UserSpec, path: str) -> list[errors.FieldViolation]:
    out = []
    for i, group in enumerate(spec.groups):
        if not group or len(group) > 253 or not group.isprintable() or any(c in group for c in ", |"):
            out.append(
                errors.FieldViolation(f"{path}.groups[{i}]", "1 to 253 printable characters, no ',', '|' or space")
            )
    if len(spec.display_name) > 256 or not spec.display_name.isprintable():
        out.append(errors.FieldViolation(f"{path}.display_name", "at most 256 printable characters"))
    return out


def _is_self(caller: Identity, record: UserRecord) -> bool:
    return caller.uid == record.uid and caller.user == record.name


class AuthService(accounts_pb2_grpc.AuthServiceServicer):
    """The interceptor chain authorized each call in the caller's tenant (tke.internal.auth.attributes
    says how each method names its user); every call acting on a user then passes `_acted_on`."""

    def __init__(self, accounts: Accounts) -> None:
        self.a = accounts

    async def _hash(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the password lane, counted against the caller's user and tenant;
        a platform administrator's call waits its turn, never refused."""
        caller = current_identity.get()
        shares = (Share("user", caller.user), Share("tenant", caller.tenant_id))
        return await self.a.lane.run(shares, fn, *args, exempt=caller.is_platform_admin)

    async def Login(self, request: accounts_pb2.LoginRequest, context: Any) -> accounts_pb2.LoginResponse:
        peer = context.peer() or ""
        wait, what = self.a.throttle.attempt(request.username, peer)
        if wait:
            raise errors.throttled(f"too many failed logins for {what}: retry in {math.ceil(wait)}s", wait)
        user = self.a._user(request.username)
        # Nobody is signed in yet: the name asked for is the user, with its tenant when it exists.
        shares = [Share("user", request.username, _LOGIN_SHARE)]
        if user is not None:
            shares.append(Share("tenant", user.tenant, _LOGIN_SHARE))
        if self.a.throttle.clients.limit.burst:  # off behind a gateway or NAT that makes everyone one client
            shares.append(Share("client", client_address(peer)))
        try:
            ok = await self.a.lane.run(
                shares, verify_password, request.password, user.password_hash if user else DUMMY_HASH
            )
        except errors.ApiError:
            self.a.throttle.succeeded(request.username, peer)  # no password was checked: no attempt made
            raise
        if user is None or not ok or user.disabled:
            raise errors.unauthenticated("invalid user name or password")
        self.a.throttle.succeeded(request.username, peer)
        token, claims = self.a.signer.issue(user.name, user.uid, self.a.token_ttl)
        return accounts_pb2.LoginResponse(token=token, expires_at=_ts(claims.expires_at))

    async def Logout(self, request: accounts_pb2.LogoutRequest, context: Any) -> accounts_pb2.LogoutResponse:
        identity = current_identity.get()
        token_id = identity.extra.get(TOKEN_ID, ("",))[0]
        if not token_id:
            raise errors.ApiError(grpc.StatusCode.FAILED_PRECONDITION, "this call was not made with a login token")
        expires = float(identity.extra.get(EXPIRES, ("0",))[0])
        issued = float(identity.extra.get("token-issued", ("0",))[0])
        a, user = self.a, identity.user
        # A user holds at most max_revocations_per_user revocation records (and their leases):
        # past them, this Logout ends all the user's sessions issued until now instead (see
        # the module docstring). A Logout is never refused either way.
        held = len(a._revoked_by.get(user, ())) + a._revoking.get(user, 0)
        if held >= a.max_revocations and await self._end_sessions(user, identity.uid, issued):
            return accounts_pb2.LogoutResponse()
        a._revoking[user] = a._revoking.get(user, 0) + 1
        try:
            # The revocation only has to outlive the token: etcd drops it with its lease.
            lease = await a.store.grant(max(1, int(expires - time.time()) + 1))
            try:
                await a._write_new("revoked", token_id, Revocation(expires, user, issued, lease), lease=lease)
            except AlreadyExists:
                await a.store.revoke(lease)  # a concurrent Logout of this token revoked it
        finally:
            if n := a._revoking[user] - 1:
                a._revoking[user] = n
            else:
                del a._revoking[user]
        return accounts_pb2.LogoutResponse()

    async def _end_sessions(self, name: str, uid: str, issued: float) -> bool:
        """Invalidate every token of user `name` (`uid`) issued until now, the caller's (issued
        at `issued`) included, and drop the user's revocations, which that covers. False when
        the user record kept changing under the compare-and-swap (the caller revokes its token
        alone then)."""
        a = self.a
        for _ in range(_RETRIES):
            try:
                item = await a.store.get(a._key("users", name))
            except NotFound:
                return True  # the user is gone: none of its tokens is valid any more
            record = UserRecord(**json.loads(item.value))
            if record.uid != uid:
                return True  # another user of that name now: this one's tokens are invalid
            # Tokens are issued with millisecond precision, and valid from not_before on.
            not_before = max(time.time(), issued + 0.001, record.not_before)
            try:
                written = await a.store.update(
                    item.key,
                    json.dumps(asdict(replace(record, not_before=not_before))).encode(),
                    expected_revision=item.mod_revision,
                )
            except Conflict:
                continue
            except NotFound:
                return True
            await a._mirror.wait_for(written.mod_revision)
            break
        else:
            return False
        log.info("user %r logged out past %d revocations: its earlier sessions are ended", name, a.max_revocations)
        for key in list(a._revoked_by.get(name, ())):
            revocation = a._mirror.items.get(key)
            # Only those not_before covers: a token issued since may have been revoked meanwhile.
            if isinstance(revocation, Revocation) and revocation.lease and 0 < revocation.issued < not_before:
                try:
                    await a.store.revoke(revocation.lease)  # removes the record with its lease
                except StorageError as err:  # it expires with its token; the next such Logout retries
                    log.warning("could not drop a revocation of user %r: %s", name, err)
        return True

    # -- the rule of acting on a user ---------------------------------------------------------

    async def _acted_on(self, name: str, verb: str, resource: str) -> tuple[UserRecord, Item]:
        """The user `name` as stored now, once the caller may `verb` its `resource`: it reaches
        the user's tenant (else NOT_FOUND, the answer for a user that does not exist), the
        authorizers allow the verb in that tenant, and the caller holds every privilege the
        user holds. One's own account needs no privilege. Writes are then guarded on the
        returned item's revision, so that they act on what was checked."""
        caller = current_identity.get()
        authority = self.a.authority
        missing = errors.not_found("user", name, caller.tenant_id)
        try:
            item = await self.a.store.get(self.a._key("users", name)) if name else None
        except NotFound:
            raise missing from None
        if item is None:
            raise missing
        record = UserRecord(**json.loads(item.value))
        if not authority.reaches(caller, record.tenant):
            raise missing
        if _is_self(caller, record):
            return record, item
        if record.tenant != caller.tenant_id:
            attributes = Attributes(caller, verb, resource, name, record.tenant)
            decision, reason = await authority.authorize(attributes)
            if decision is not Decision.ALLOW:
                raise authority.refusal(attributes, reason)
        target = self.a.target_identity(record)
        await authority.ensure_may_act_on(caller, target, f"{verb} {resource} of user {name!r}")
        return record, item

    async def _rewrite(
        self, name: str, verb: str, resource: str, change: Callable[[UserRecord], Awaitable[UserRecord]]
    ) -> UserRecord:
        """Read, check (`_acted_on`), change (`change` returns a new record) and compare-and-swap
        a user record; again on a race."""
        for _ in range(_RETRIES):
            record, item = await self._acted_on(name, verb, resource)
            new = await change(record)
            value = json.dumps(asdict(new)).encode()
            # A record that grows takes the growth from its tenant's bytes quota.
            usage = self.a.users_usage
            hold = usage.hold(record.tenant, 0, len(value) - len(item.value)) if usage is not None else None
            revision = 0
            try:
                written = await self.a.store.update(item.key, value, expected_revision=item.mod_revision)
                revision = written.mod_revision
            except Conflict:
                continue
            except NotFound:
                raise errors.not_found("user", name, current_identity.get().tenant_id) from None
            finally:
                if usage is not None:
                    usage.done(hold, revision)
            await self.a._mirror.wait_for(revision)
            return new
        raise errors.unavailable("the user changed concurrently; retry")

    # -- users --------------------------------------------------------------------------------

    async def CreateUser(self, request: accounts_pb2.CreateUserRequest, context: Any) -> accounts_pb2.User:
        caller = current_identity.get()
        user = request.user
        violations = []
        if err := dns1123_label_error(user.metadata.name):
            violations.append(errors.FieldViolation("user.metadata.name", err))
        if err := password_error(request.password):
            violations.append(errors.FieldViolation("password", err))
        violations += _spec_violations(user.spec, "user.spec")
        tenant = user.metadata.tenant_id or caller.tenant_id
        if err := dns1123_label_error(tenant):
            violations.append(errors.FieldViolation("user.metadata.tenant_id", err))
        if violations:
            raise errors.invalid(violations)
        record = Accounts._new_user(
            user.metadata.name,
            tenant,
            list(user.spec.groups),
            user.spec.display_name,
            request.password,
            disabled=user.spec.disabled,
        )
        # The new user would hold its groups' grants and those of bindings already naming it.
        target = self.a.target_identity(record)
        await self.a.authority.ensure_may_act_on(caller, target, f"create user {record.name!r}")
        record = await self._hash(_hashed, record)
        try:
            await self.a._write_new("users", record.name, record, counted=(self.a.users_usage, tenant))
        except AlreadyExists:
            raise errors.already_exists("user", record.name, tenant) from None
        return _user_message(record)

    async def UpdateUser(self, request: accounts_pb2.UpdateUserRequest, context: Any) -> accounts_pb2.User:
        caller = current_identity.get()
        user = request.user
        name = user.metadata.name
        paths = list(request.update_mask.paths) or ["spec"]
        violations = [] if name else [errors.FieldViolation("user.metadata.name", "is required")]
        violations += [
            errors.FieldViolation(
                f"update_mask.paths[{i}]", f"{p!r} cannot be updated; updatable: {', '.join(_USER_PATHS)}"
            )
            for i, p in enumerate(paths)
            if p not in _USER_PATHS
        ]
        violations += _spec_violations(user.spec, "user.spec")
        if violations:
            raise errors.invalid(violations)

        def wants(field: str) -> bool:
            return "spec" in paths or f"spec.{field}" in paths

        async def change(record: UserRecord) -> UserRecord:
            if user.metadata.tenant_id and user.metadata.tenant_id != record.tenant:
                raise errors.invalid_field("user.metadata.tenant_id", "a user's tenant cannot change")
            new = replace(record)
            if wants("display_name"):
                new.display_name = user.spec.display_name
            if wants("groups"):
                new.groups = list(user.spec.groups)
            if wants("disabled"):
                if user.spec.disabled and not record.disabled:
                    new.not_before = time.time()  # a disablement ends the sessions for good
                new.disabled = user.spec.disabled
            if new.groups != record.groups:
                target = self.a.target_identity(new)
                await self.a.authority.ensure_may_act_on(caller, target, f"give user {name!r} groups {new.groups}")
            return new

        return _user_message(await self._rewrite(name, "update", "users", change))

    async def DeleteUser(self, request: accounts_pb2.DeleteUserRequest, context: Any) -> accounts_pb2.User:
        """The user's API keys go first, then the user, then any key made meanwhile: a call that
        ends half way (cancelled, etcd gone) leaves the user with fewer keys, to be deleted again,
        never keys of a deleted user that the API can no longer reach and that still count
        against the tenant's quota."""
        for _ in range(_RETRIES):
            record, item = await self._acted_on(request.name, "delete", "users")
            # Its keys, and any an earlier user of the name left behind (names are unique, so
            # every key naming it is its own or such a leftover, which no one can use).
            await self._delete_keys(record.name)
            try:
                revision = await self.a.store.delete(item.key, expected_revision=item.mod_revision)
            except Conflict:
                continue
            except NotFound:
                raise errors.not_found("user", request.name, current_identity.get().tenant_id) from None
            await self.a._mirror.wait_for(revision)
            # Keys made meanwhile: this user's only, not those of a namesake created since.
            await self._delete_keys(record.name, owner=record)
            return _user_message(record)
        raise errors.unavailable("the user changed concurrently; retry")

    async def _delete_keys(self, name: str, owner: UserRecord | None = None) -> None:
        """Delete the keys naming user `name` (with `owner`: only those that belong to it)."""
        for key_record in list(self.a._records().keys.values()):
            if key_record.user == name and (owner is None or key_record.belongs_to(owner)):
                await self._delete_key(key_record.id)

    async def ListUsers(self, request: accounts_pb2.ListUsersRequest, context: Any) -> accounts_pb2.UserList:
        """A page of users in name order; the continue token is sealed for the caller's query
        (tenant and page size), and names where the next page starts."""
        caller = current_identity.get()
        tenant = request.tenant_id or caller.tenant_id
        if not self.a.authority.reaches(caller, tenant):
            raise errors.permission_denied(f"user {caller.user!r} may not list users of tenant {tenant!r}")
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise errors.invalid_field("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        limit = request.page_size or DEFAULT_PAGE_SIZE
        query = f"{tenant}\0{limit}".encode()
        after = ""
        if request.continue_token:
            after = self._continue_after(query, request.continue_token)
        users = sorted(
            (u for u in self.a._records().users.values() if tenant in ("*", u.tenant) and u.name > after),
            key=lambda u: u.name,
        )
        out = accounts_pb2.UserList(items=[_user_message(u) for u in users[:limit]])
        out.metadata.resource_version = str(self.a._mirror.revision)
        if len(users) > limit:
            out.metadata.continue_token = self.a.page_tokens.seal(query, {"n": users[limit - 1].name})
        return out

    def _continue_after(self, query: bytes, token: str) -> str:
        bad = errors.invalid_field(
            "continue_token",
            "is not a continue token of this list (same tenant and page size); pass metadata.continue_token",
        )
        try:
            name = self.a.page_tokens.open(query, token).get("n")
        except PageTokenError:
            raise bad from None
        if not isinstance(name, str) or not name:
            raise bad
        return name

    async def ChangePassword(
        self, request: accounts_pb2.ChangePasswordRequest, context: Any
    ) -> accounts_pb2.ChangePasswordResponse:
        caller = current_identity.get()
        if err := password_error(request.new_password):
            raise errors.invalid_field("new_password", err)

        # Each hash is ~37 ms of CPU through the password lane: a compare-and-swap retry after a
        # race re-checks the old password only when the stored hash itself changed, and hashes
        # the new one once. Both stay after `_acted_on`, so no one unauthorized makes us hash.
        verified: set[str] = set()
        new_hash: list[str] = []

        async def change(record: UserRecord) -> UserRecord:
            if _is_self(caller, record) and record.password_hash not in verified:
                if not await self._hash(verify_password, request.old_password, record.password_hash):
                    raise errors.invalid_field("old_password", "is not the current password")
                verified.add(record.password_hash)
            if not new_hash:
                new_hash.append(await self._hash(hash_password, request.new_password))
            return replace(record, password_hash=new_hash[0], not_before=time.time())

        await self._rewrite(request.name or caller.user, "update", "passwords", change)
        return accounts_pb2.ChangePasswordResponse()

    # -- API keys -----------------------------------------------------------------------------

    async def CreateAPIKey(
        self, request: accounts_pb2.CreateAPIKeyRequest, context: Any
    ) -> accounts_pb2.CreateAPIKeyResponse:
        caller = current_identity.get()
        if not 0 <= request.ttl_seconds <= _MAX_KEY_TTL:
            raise errors.invalid_field("ttl_seconds", f"must be between 0 (no expiry) and {_MAX_KEY_TTL}")
        for _ in range(_RETRIES):
            record, item = await self._acted_on(request.user or caller.user, "create", "apikeys")
            key_id = f"{record.name}.{secrets.token_hex(6)}"
            secret = secrets.token_urlsafe(32).replace(".", "-")
            now = time.time()
            key = APIKeyRecord(
                key_id,
                record.name,
                _sha256(secret),
                request.description[:256],
                now,
                now + request.ttl_seconds if request.ttl_seconds else 0.0,
                record.uid,
                record.tenant,
            )
            try:
                # Only while the user is still the one checked (same groups, not replaced).
                await self.a._write_new(
                    "apikeys",
                    key_id,
                    key,
                    guards=(Guard(item.key, item.mod_revision),),
                    counted=(self.a.keys_usage, record.tenant),
                )
            except PreconditionFailed:
                continue
            return accounts_pb2.CreateAPIKeyResponse(key=_key_message(key), secret=f"{API_KEY_PREFIX}{key_id}.{secret}")
        raise errors.unavailable("the user changed concurrently; retry")

    async def _delete_key(self, key_id: str) -> None:
        key = self.a._key("apikeys", key_id)
        try:
            item = await self.a.store.get(key)
            revision = await self.a.store.delete(key, expected_revision=item.mod_revision)
        except (NotFound, Conflict):
            return
        await self.a._mirror.wait_for(revision)  # the key no longer works here when the call returns

    async def DeleteAPIKey(
        self, request: accounts_pb2.DeleteAPIKeyRequest, context: Any
    ) -> accounts_pb2.DeleteAPIKeyResponse:
        record = self.a._records().keys.get(request.id)
        if record is None:
            raise errors.not_found("apikey", request.id, current_identity.get().tenant_id)
        await self._acted_on(record.user, "delete", "apikeys")
        await self._delete_key(request.id)
        return accounts_pb2.DeleteAPIKeyResponse()

    async def ListAPIKeys(
        self, request: accounts_pb2.ListAPIKeysRequest, context: Any
    ) -> accounts_pb2.ListAPIKeysResponse:
        user, _ = await self._acted_on(request.user or current_identity.get().user, "list", "apikeys")
        keys = sorted((k for k in self.a._records().keys.values() if k.belongs_to(user)), key=lambda k: k.id)
        return accounts_pb2.ListAPIKeysResponse(keys=[_key_message(k) for k in keys])
