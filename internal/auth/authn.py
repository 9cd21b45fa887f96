"""Authentication: who is calling.

An Authenticator looks at a call's credentials and answers with an Identity, None ("not
mine": the next authenticator may know it), or raises AuthenticationError (the credentials are
recognisably its own but bad: expired, revoked, forged), which ends the search. A Union asks
each in turn. The shapes follow Kubernetes' authenticator seam; TokenFunc turns a function into
an authenticator (tests use it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tke.internal.auth.identity import Identity


class AuthenticationError(Exception):
    """The credentials were presented but are invalid. The message is shown to the caller, so it
    never contains the credential itself."""


@dataclass(frozen=True)
class Credentials:
    """What a call presented: its metadata (lower-case keys) and, over mutual TLS, the peer's
    verified certificate in PEM."""

    metadata: Mapping[str, str]
    peer_certificate_pem: bytes = b""

    @property
    def bearer_token(self) -> str:
        value = self.metadata.get("authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""


class Authenticator(Protocol):
    async def authenticate(self, credentials: Credentials) -> Identity | None: ...


class Union:
    """The first authenticator that claims the call wins; an error stops the search."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self.authenticators = list(authenticators)

    async def authenticate(self, credentials: Credentials) -> Identity | None:
        for authenticator in self.authenticators:
            identity = await authenticator.authenticate(credentials)
            if identity is not None:
                return identity
        return None


class TokenFunc:
    """An authenticator made of a function of the bearer token."""

    def __init__(self, fn: Callable[[str], Awaitable[Identity | None]]) -> None:
        self.fn = fn

    async def authenticate(self, credentials: Credentials) -> Identity | None:
        token = credentials.bearer_token
        return await self.fn(token) if token else None
