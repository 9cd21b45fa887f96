"""Static bearer tokens from a file: `token,user,uid,group1|group2,tenant` per line; '#' starts
a comment. For development and for service accounts of small installations. Entry point
`token-file` of `tke.authn`; option `path`."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from tke.internal.auth.authn import Credentials
from tke.internal.auth.identity import DEFAULT_TENANT, Identity


class TokenFile:
    def __init__(self, context: Any = None, *, path: str) -> None:
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

    async def authenticate(self, credentials: Credentials) -> Identity | None:
        token = credentials.bearer_token.encode()
        if not token:
            return None
        found = None
        # Compare against every token in constant time, so timing says nothing about which.
        for known, identity in self._tokens:
            if hmac.compare_digest(known, token):
                found = identity
        return found
