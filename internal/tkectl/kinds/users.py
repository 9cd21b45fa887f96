"""Users of the built-in accounts (tke.auth.v1.AuthService) as a tkectl kind. The service has no
Get: get reads the tenant's list. A user file carries its initial password in a `password:` key
beside the message's fields; apply and edit replace the spec (display name, groups, disabled)
through UpdateUser."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc
from tke.internal.meta.labels import SelectorError, parse_selector
from tke.internal.tkectl.connection import APISERVER, Connection
from tke.internal.tkectl.errors import not_found, usage
from tke.internal.tkectl.kinds.base import Column, Kind, Query, age, labels_text


class Users(Kind):
    plural, singular, kind, aliases = "users", "user", "User", ()
    message = accounts_pb2.User
    server = APISERVER
    extra_keys = ("password",)
    apply_paths = ("spec",)
    editable = True
    columns = (
        Column("NAME", lambda o: o.metadata.name),
        Column("TENANT", lambda o: o.metadata.tenant_id),
        Column("GROUPS", lambda o: ",".join(o.spec.groups) or "<none>"),
        Column("DISABLED", lambda o: str(o.spec.disabled).lower()),
        Column("AGE", lambda o: age(o.metadata.creation_timestamp)),
    )
    wide_columns = (
        Column("DISPLAY-NAME", lambda o: o.spec.display_name),
        Column("LABELS", lambda o: labels_text(o.metadata.labels)),
    )

    def _stub(self, conn: Connection) -> Any:
        return accounts_pb2_grpc.AuthServiceStub(conn.channel(self.server))

    async def get(self, conn: Connection, name: str, tenant: str) -> Message:
        for user in await self.list(conn, Query(tenant=tenant)):
            if self.name_of(user) == name:
                return user
        raise not_found(f'user "{name}" not found')

    async def list(self, conn: Connection, query: Query) -> Sequence[Message]:
        try:
            selector = parse_selector(query.selector)
        except SelectorError as err:
            raise usage(f"invalid label selector: {err}") from None
        stub = self._stub(conn)
        users: list[Message] = []
        token = ""
        while True:
            page = await self.call(
                conn, stub.ListUsers, accounts_pb2.ListUsersRequest(tenant_id=query.tenant, continue_token=token)
            )
            users += [u for u in page.items if selector.matches(u.metadata.labels)]
            token = page.metadata.continue_token
            if not token:
                return users

    async def create(self, conn: Connection, obj: Message, extra: dict[str, Any]) -> Message:
        password = extra.get("password")
        if not isinstance(password, str) or not password:
            raise usage(f"{self.ref(obj)}: a user needs its initial password: a `password:` key in the file")
        request = accounts_pb2.CreateUserRequest(user=cast(accounts_pb2.User, obj), password=password)
        result: Message = await self.call(conn, self._stub(conn).CreateUser, request)
        return result

    async def update(self, conn: Connection, obj: Message, paths: Sequence[str]) -> Message:
        mask = field_mask_pb2.FieldMask(paths=list(paths))
        request = accounts_pb2.UpdateUserRequest(user=cast(accounts_pb2.User, obj), update_mask=mask)
        result: Message = await self.call(conn, self._stub(conn).UpdateUser, request)
        return result

    async def delete(self, conn: Connection, name: str, tenant: str, resource_version: str) -> Message | None:
        result: Message = await self.call(conn, self._stub(conn).DeleteUser, accounts_pb2.DeleteUserRequest(name=name))
        return result
