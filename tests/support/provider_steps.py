"""Running a provider's steps without the controller, for tests of one provider: the steps in
order with their temporary failures retried, and the platform's ClusterCredential store in
memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from tke.internal.provider.cluster_credentials import CredentialExists
from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.steps import Step
from tke.platform.v1 import credential_pb2


class MemoryCredentialStore:
    """The platform's ClusterCredential store, in memory (provider steps run without an
    apiserver)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], credential_pb2.ClusterCredential] = {}

    async def get(self, tenant: str, name: str) -> credential_pb2.ClusterCredential | None:
        return self.stored.get((tenant, name))

    async def create(self, credential: credential_pb2.ClusterCredential) -> None:
        key = (credential.metadata.tenant_id, credential.metadata.name)
        if key in self.stored:
            raise CredentialExists(key)
        self.stored[key] = credential

    async def delete(self, tenant: str, name: str) -> None:
        self.stored.pop((tenant, name), None)


async def run_steps(steps: Sequence[Step[Any]], ctx: Any, within: float = 60.0) -> None:
    """Run a plan's steps in order, as the controller would: a TemporaryError is tried again
    (after a short pause, within `within` seconds per step); anything else ends the run."""
    for step in steps:
        deadline = time.monotonic() + within
        while True:
            try:
                await step.run(ctx)
                break
            except TemporaryError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
