"""The authentication step of the server's interceptor chain.

It runs after the request interceptor, which turns its errors into statuses. Every call but
the health service must be claimed by an authenticator (UNAUTHENTICATED
otherwise); reflection too, unless the configuration opens it. The identity is kept in
`current_identity` for the handler. With no authenticator configured the server runs open,
as the anonymous platform administrator: development only, and loudly logged at start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc_interceptor.server import AsyncServerInterceptor

from tke.internal.auth.authn import AuthenticationError, Authenticator, Credentials
from tke.internal.auth.identity import current_identity
from tke.internal.rpc import errors

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."


class AuthenticationInterceptor(AsyncServerInterceptor):
    def __init__(self, authenticator: Authenticator, *, open_reflection: bool = False) -> None:
        self.authenticator = authenticator
        self.open_reflection = open_reflection

    async def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: grpc.aio.ServicerContext, method_name: str
    ) -> Any:
        if method_name.startswith(HEALTH_PREFIX) or (
            self.open_reflection and method_name.startswith(REFLECTION_PREFIX)
        ):
            return await _call(method, request_or_iterator, context)
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        try:
            identity = self.authenticator.authenticate(Credentials(metadata=metadata))
        except AuthenticationError as err:
            raise errors.unauthenticated(f"invalid credentials: {err}") from None
        if identity is None:
            raise errors.unauthenticated(
                "no valid credentials: send 'authorization: Bearer <token>' or a client certificate"
            )
        current_identity.set(identity)
        return await _call(method, request_or_iterator, context)


async def _call(method: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext) -> Any:
    response = method(request, context)
    if hasattr(response, "__aiter__"):
        return response
    return await response
