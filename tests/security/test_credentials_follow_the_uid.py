"""Rule: tokens and API keys belong to the user's uid, not its name. Deleting a user and creating
another with the same name, in any tenant, never brings the old user's tokens or keys back, even
a key record that survived the deletion. The namesakes even share the password: the uid alone
tells them apart."""

from __future__ import annotations

import grpc

from tests.security.platform import Client, Platform, binding
from tests.support.rpc import expect_error
from tke.auth.v1 import accounts_pb2
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode


async def test_a_namesake_never_inherits_tokens_or_keys(platform: Platform) -> None:
    await platform.add_user("bob", "team-a")
    await platform.bind(binding("bob-view", "team-a", "viewer", users=["bob"]))
    await platform.bind(binding("bob-view", "team-b", "viewer", users=["bob"]))
    old = await platform.login("bob")
    key = await old.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(description="old bob's"))
    by_key = Client(platform.api, key.secret)
    await by_key.clusters.List(cluster_pb2.ListClustersRequest())
    # Keep the key's record as it is stored, as a deletion cut short would leave it behind.
    store = platform.api.apiserver.store
    key_path = f"{platform.api.apiserver.prefix}/auth/apikeys/{key.key.id}"
    record = (await store.get(key_path)).value

    await platform.root.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name="bob"))
    for tenant in ("team-b", "team-a"):  # another tenant, then the same one
        await platform.add_user("bob", tenant)
        await store.create(key_path, record)  # the old key's record, back in place
        for client in (old, by_key):
            await expect_error(client.clusters.List(cluster_pb2.ListClustersRequest()), Code.UNAUTHENTICATED)
        # The old key is not the new user's either: it is neither listed nor usable.
        new = await platform.login("bob")
        listed = await new.auth.ListAPIKeys(accounts_pb2.ListAPIKeysRequest())
        assert [k.id for k in listed.keys] == []
        await new.clusters.List(cluster_pb2.ListClustersRequest())  # the namesake's own login works
        mine = await new.auth.CreateAPIKey(accounts_pb2.CreateAPIKeyRequest(description="new bob's"))
        await Client(platform.api, mine.secret).clusters.List(cluster_pb2.ListClustersRequest())
        await platform.root.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name="bob"))  # and its keys
