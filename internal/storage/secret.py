"""A random key shared by every server of one installation, kept in the store.

Servers that must agree on a key (apiservers sealing page tokens another one opens) read it
from one store key; the first to need it creates it, with a compare-and-swap on the key's
absence, so every server ends up with the same bytes. Whoever can read the store can read the
key: it protects against clients, not against the store's own users.
"""

from __future__ import annotations

import secrets

from tke.internal.storage.store import AlreadyExists, NotFound, Store

KEY_BYTES = 32


async def shared_secret(store: Store, key: str) -> bytes:
    """The bytes under `key`, created (random) when absent."""
    try:
        return (await store.get(key)).value
    except NotFound:
        pass
    try:
        return (await store.create(key, secrets.token_bytes(KEY_BYTES))).value
    except AlreadyExists:  # another server created it first: use theirs
        return (await store.get(key)).value
