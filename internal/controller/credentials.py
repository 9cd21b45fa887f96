"""The cluster credential store of the providers (tke.internal.provider.cluster_credentials),
through tke-apiserver's ClusterCredentialService: the controller keeps the clusters' CAs where
every other object lives, never in etcd directly and never on its own disk."""

from __future__ import annotations

import grpc

from tke.internal.controller.client import ApiClient, code_of
from tke.internal.provider.cluster_credentials import CredentialExists
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.platform.v1 import credential_pb2


class ApiCredentialStore:
    def __init__(self, client: ApiClient[credential_pb2.ClusterCredential]) -> None:
        self.client = client

    async def get(self, tenant: str, name: str) -> credential_pb2.ClusterCredential | None:
        try:
            return await self.client.get(tenant, name)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _step_error("read", name, err) from None

    async def create(self, credential: credential_pb2.ClusterCredential) -> None:
        try:
            await self.client.create(credential)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.ALREADY_EXISTS:
                raise CredentialExists(credential.metadata.name) from None
            raise _step_error("store", credential.metadata.name, err) from None

    async def delete(self, tenant: str, name: str) -> None:
        try:
            await self.client.delete(tenant, name)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise _step_error("delete", name, err) from None


def _step_error(verb: str, name: str, err: grpc.aio.AioRpcError) -> Exception:
    message = f"cannot {verb} the credential of cluster {name}: {err.code().name}: {err.details()}"
    if code_of(err) in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        # The controller must run as a platform administrator: retrying cannot help.
        return PermanentError(message)
    return TemporaryError(message)
