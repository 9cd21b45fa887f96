"""etcd's fragmented watch responses: a transaction's events cut between fragments, and a stream
that breaks between those fragments, still give every event once (EtcdStore.watch holds a
response's last revision back until it is whole).

Real etcd: one transaction updates three keys of ~450 KiB, so each event with its previous value
is ~900 KiB and etcd (max request 1.5 MiB) sends the revision as three fragments; a put of a
marker key follows. The break is
injected in the client: the watch stream's first read after the first fragment fails as a
broken connection does (UNAVAILABLE)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from aetcd import rpc

from tke.internal.storage.etcd import EtcdStore
from tke.internal.storage.store import Event

VALUE = 450 * 1024


class _BreaksAfterFirstFragment:
    """A watch call that reads from the real one and fails once, right after the first
    fragment it passed on."""

    def __init__(self, call: Any, state: dict[str, int]) -> None:
        self.call = call
        self.state = state

    async def write(self, request: rpc.WatchRequest) -> None:
        await self.call.write(request)

    async def done_writing(self) -> None:
        await self.call.done_writing()

    def cancel(self) -> bool:
        return bool(self.call.cancel())

    async def read(self) -> Any:
        if self.state["fragments"] == 1 and not self.state["broken"]:
            self.state["broken"] = 1
            self.call.cancel()
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connection broken (test)"
            )
        resp = await self.call.read()
        if resp is not grpc.aio.EOF and resp.fragment:
            self.state["fragments"] += 1
        return resp


class _WatchStub:
    def __init__(self, stub: Any, state: dict[str, int]) -> None:
        self.stub = stub
        self.state = state

    def Watch(self, *args: Any, **kwargs: Any) -> _BreaksAfterFirstFragment:
        return _BreaksAfterFirstFragment(self.stub.Watch(*args, **kwargs), self.state)


async def test_a_stream_broken_between_fragments_of_one_transaction_loses_and_repeats_nothing(
    store: EtcdStore, etcd_prefix: str
) -> None:
    keys = [f"{etcd_prefix}/frag/{i}".encode() for i in range(3)]
    conn = store._conn
    puts = [rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=b"a" * VALUE)) for k in keys]
    created = await conn.call(conn.kv.Txn, rpc.TxnRequest(success=puts), idempotent=False)
    puts = [rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=b"b" * VALUE)) for k in keys]
    updated = await conn.call(conn.kv.Txn, rpc.TxnRequest(success=puts), idempotent=False)
    revision = updated.header.revision
    marker = f"{etcd_prefix}/frag/marker"  # the change after: the watch has passed the transaction
    await conn.call(conn.kv.Put, rpc.PutRequest(key=marker.encode(), value=b"m"), idempotent=False)

    state = {"fragments": 0, "broken": 0}
    conn.watch = _WatchStub(conn.watch, state)
    seen: list[Event] = []

    async def follow() -> None:
        async for message in store.watch(f"{etcd_prefix}/frag/", after_revision=created.header.revision):
            if isinstance(message, Event):
                if message.item.key == marker:
                    return
                seen.append(message)

    async with asyncio.timeout(30):
        await follow()
    assert [(e.item.key, e.item.mod_revision) for e in seen] == [(k.decode(), revision) for k in keys]
    assert state["broken"] == 1 and state["fragments"] >= 2, state  # it did break between fragments
    assert all(e.item.value == b"b" * VALUE and e.prev_value == b"a" * VALUE for e in seen)
