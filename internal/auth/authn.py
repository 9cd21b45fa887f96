"""Authentication: who is calling.

An Authenticator looks at a call's credentials and answers with an Identity, None ("not
mine": another authenticator may know it), or raises AuthenticationError (the credentials are
recognisably bad). A Union asks each in turn. Shapes follow Kubernetes' authenticator seam.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tke.internal.auth.identity import DEFAULT_TENANT, Identity


class AuthenticationError(Exception):
    """The credentials were presented but are invalid (expired, revoked, forged)."""


@dataclass(frozen=True)
class Credentials:
    """What a call presented: its metadata (lower-case keys) and, over mutual TLS, the peer's
    verified certificate subject."""

    metadata: Mapping[str, str]
    peer_common_name: str = ""
    peer_organizations: tuple[str, ...] = ()

    @property
    def bearer_token(self) -> str:
        value = self.metadata.get("authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""


class Authenticator(Protocol):
    def authenticate(self, credentials: Credentials) -> Identity | None: ...


class Union:
    """The first authenticator that claims the call wins; an error stops the search."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self.authenticators = list(authenticators)

    def authenticate(self, credentials: Credentials) -> Identity | None:
        for authenticator in self.authenticators:
            identity = authenticator.authenticate(credentials)
            if identity is not None:
                return identity
        return None


class TokenFile:
    """Static bearer tokens from a CSV-like file: `token,user,uid,group1|group2,tenant` per
    line; '#' starts a comment. Tokens are compared in constant time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tokens: list[tuple[bytes, Identity]] = []
        for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = [f.strip() for f in line.split(",")]
            if len(fields) < 2 or not fields[0] or not fields[1]:
                raise ValueError(f"{path}:{lineno}: expected token,user[,uid[,groups[,tenant]]]")
            fields += [""] * (5 - len(fields))
            token, user, uid, groups, tenant = fields[:5]
            identity = Identity(
                user=user,
                uid=uid,
                groups=tuple(g for g in groups.split("|") if g),
                tenant_id=tenant or DEFAULT_TENANT,
            )
            self._tokens.append((token.encode(), identity))

    def authenticate(self, credentials: Credentials) -> Identity | None:
        token = credentials.bearer_token.encode()
        if not token:
            return None
        found = None
        for known, identity in self._tokens:
            if hmac.compare_digest(known, token):
                found = identity
        return found
