"""Allows everything. Development only: the apiserver logs a loud warning when it is on.
Entry point `allow-all` of `tke.authz`."""

from __future__ import annotations

from typing import Any

from tke.internal.auth.authz import Attributes, Decision


class AllowAll:
    def __init__(self, context: Any = None) -> None:
        pass

    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        return Decision.ALLOW, "allow-all authorizer (development only)"
