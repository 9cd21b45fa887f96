"""etcd's refusals of a write that is too big for it become the Store's TooLarge, never a raw
gRPC error (which the apiserver would answer INTERNAL): a transaction over etcd's --max-txn-ops
(128 operations by default), like one over its --max-request-bytes. Nothing is written."""

from __future__ import annotations

import pytest

from tke.internal.storage.etcd import EtcdStore
from tke.internal.storage.store import Claim, NotFound, TooLarge


async def test_a_transaction_over_etcds_operations_limit_is_too_large(store: EtcdStore, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/many-claims"
    claims = [Claim(key=f"{etcd_prefix}/claims/{i}", value=key.encode()) for i in range(130)]
    with pytest.raises(TooLarge, match="too many operations"):
        await store.create(key, b"v", claims=claims)
    with pytest.raises(NotFound):
        await store.get(key)
    with pytest.raises(NotFound):
        await store.get(claims[0].key)
