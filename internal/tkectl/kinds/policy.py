"""Roles and role bindings of the policy centre (tke.auth.v1.PolicyService) as tkectl kinds."""

from __future__ import annotations

from typing import Any

from tke.auth.v1 import policy_pb2, policy_pb2_grpc
from tke.internal.tkectl.kinds.api import ApiKind
from tke.internal.tkectl.kinds.base import Column, age, labels_text

NAME = Column("NAME", lambda o: o.metadata.name)
TENANT = Column("TENANT", lambda o: o.metadata.tenant_id)
AGE = Column("AGE", lambda o: age(o.metadata.creation_timestamp))


def _rules(o: Any) -> str:
    return "; ".join(f"{','.join(r.verbs)} {','.join(r.resources)}" for r in o.spec.rules) or "<none>"


def _subjects(o: Any) -> str:
    return ",".join(f"{s.kind}:{s.name}" for s in o.spec.subjects) or "<none>"


class Roles(ApiKind):
    plural, singular, kind, aliases = "roles", "role", "Role", ()
    message = policy_pb2.Role
    stub = policy_pb2_grpc.PolicyServiceStub
    field = "role"
    methods = {v: f"{v.capitalize()}Role" for v in ("create", "get", "update", "delete")} | {"list": "ListRoles"}
    requests = {
        "create": policy_pb2.CreateRoleRequest,
        "get": policy_pb2.GetRoleRequest,
        "list": policy_pb2.ListRolesRequest,
        "update": policy_pb2.UpdateRoleRequest,
        "delete": policy_pb2.DeleteRoleRequest,
    }
    columns = (NAME, Column("RULES", _rules), AGE)
    wide_columns = (
        TENANT,
        Column("DESCRIPTION", lambda o: o.spec.description),
        Column("LABELS", lambda o: labels_text(o.metadata.labels)),
    )


class RoleBindings(ApiKind):
    plural, singular, kind, aliases = "rolebindings", "rolebinding", "RoleBinding", ("rb",)
    message = policy_pb2.RoleBinding
    stub = policy_pb2_grpc.PolicyServiceStub
    field = "role_binding"
    methods = {v: f"{v.capitalize()}RoleBinding" for v in ("create", "get", "update", "delete")} | {
        "list": "ListRoleBindings"
    }
    requests = {
        "create": policy_pb2.CreateRoleBindingRequest,
        "get": policy_pb2.GetRoleBindingRequest,
        "list": policy_pb2.ListRoleBindingsRequest,
        "update": policy_pb2.UpdateRoleBindingRequest,
        "delete": policy_pb2.DeleteRoleBindingRequest,
    }
    columns = (NAME, Column("ROLE", lambda o: o.spec.role), Column("SUBJECTS", _subjects), AGE)
    wide_columns = (
        TENANT,
        Column("ALL-TENANTS", lambda o: str(o.spec.all_tenants).lower()),
        Column("LABELS", lambda o: labels_text(o.metadata.labels)),
    )
