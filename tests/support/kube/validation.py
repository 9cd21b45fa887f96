"""What kube-apiserver checks before it stores an object, as far as the stand-in goes:

- the object against Kubernetes' own OpenAPI schemas for the configured Kubernetes version, as
  packaged offline by kubernetes-validate, in its strict form: unknown fields, wrong types and
  missing required fields are 422 Invalid, each cause naming its field the way Kubernetes
  does (`spec.template.spec.containers[0].ports[0].containerPort`). Kubernetes itself drops
  unknown fields with a warning unless the client asks for strict field validation; the
  stand-in is always strict, so a test catches what a real server would silently lose;
- metadata: a name (or generateName) that follows the resource's naming rule, label keys and
  values, annotation keys.
The kinds' semantic rules (for example a Deployment's selector must match its template's
labels) are not checked."""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Iterable
from typing import Any

import jsonschema
import referencing
from kubernetes_validate import utils as kv

from tests.support.kube.catalog import Resource
from tests.support.kube.errors import invalid
from tke.internal.meta.labels import label_value_error, qualified_name_error

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end "
    "with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
Cause = tuple[str, str, str]  # (reason, field, message)


def schema_version(kubernetes_version: str) -> str:
    """The newest schema set kubernetes-validate ships that is not newer than the version
    ("1.30.2" -> "1.30.0"). Raises ValueError for a version it does not cover."""
    wanted = tuple(int(p) for p in kubernetes_version.lstrip("v").split(".")[:2])
    have: list[str] = [v for v in kv.all_versions() if tuple(int(p) for p in v.split(".")[:2]) <= wanted]
    if not have or tuple(int(p) for p in have[-1].split(".")[:2]) != wanted:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {kubernetes_version}")
    return have[-1]


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = kv.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", version)
    definitions = kv.schema_contents(f"{folder}/_definitions.json", version)
    # As kubernetes-validate does, once per kind and version instead of once per object.
    registry: referencing.Registry[Any] = referencing.Registry()
    registry = referencing.Resource.from_contents(definitions) @ (referencing.Resource.from_contents(schema) @ registry)
    validator: jsonschema.protocols.Validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
    return validator


def field_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _causes(error: jsonschema.ValidationError) -> list[Cause]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        return [
            ("FieldValueInvalid", field_path([*path, k]), "Unsupported value: field not declared in schema")
            for k in sorted(set(error.instance) - known)
        ]
    if error.validator == "required":
        missing = re.match(r"'([^']+)' is a required property", error.message)
        name = missing.group(1) if missing else "?"
        return [("FieldValueRequired", field_path([*path, name]), "Required value")]
    if error.validator == "type":
        want = error.validator_value
        want = [t for t in want if t != "null"] if isinstance(want, list) else [want]
        return [
            (
                "FieldValueTypeInvalid",
                field_path(path),
                f"Invalid value: {_show(error.instance)}: must be of type {' or '.join(map(str, want))}",
            )
        ]
    if error.validator == "enum":
        allowed = ", ".join(f'"{v}"' for v in error.validator_value if v is not None)
        message = f"Unsupported value: {_show(error.instance)}: supported values: {allowed}"
        return [("FieldValueNotSupported", field_path(path), message)]
    return [("FieldValueInvalid", field_path(path), f"Invalid value: {_show(error.instance)}: {error.message}")]


def _show(value: Any) -> str:
    text = f'"{value}"' if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Validator:
    """Checks objects for one Kubernetes version."""

    def __init__(self, kubernetes_version: str) -> None:
        self.schemas = schema_version(kubernetes_version)

    def check(self, resource: Resource, obj: dict[str, Any], api_version: str = "", kind: str = "") -> None:
        """Raises StatusError 422 naming every field that is wrong."""
        api_version = api_version or resource.api_version
        kind = kind or resource.kind
        causes = self.metadata_causes(resource, obj.get("metadata") or {})
        errors = sorted(
            _validator(self.schemas, api_version, kind).iter_errors(obj), key=lambda e: deque(e.absolute_path)
        )
        for error in errors:
            causes += _causes(error)
        if causes:
            name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get("generateName", "")
            raise invalid(kind, resource.group if kind == resource.kind else "", name, causes)

    def metadata_causes(self, resource: Resource, meta: dict[str, Any]) -> list[Cause]:
        causes: list[Cause] = []
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            if not meta.get("generateName"):
                required = "Required value: name or generateName is required"
                causes.append(("FieldValueRequired", "metadata.name", required))
        elif problem := name_problem(resource, name):
            causes.append(("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {problem}'))
        for key, value in (meta.get("labels") or {}).items():
            if err := qualified_name_error(key):
                causes.append(("FieldValueInvalid", "metadata.labels", f'Invalid value: "{key}": {err}'))
            elif isinstance(value, str) and (err := label_value_error(value)):
                causes.append(("FieldValueInvalid", "metadata.labels", f'Invalid value: "{value}": {err}'))
        for key in meta.get("annotations") or {}:
            if err := qualified_name_error(key):
                causes.append(("FieldValueInvalid", "metadata.annotations", f'Invalid value: "{key}": {err}'))
        return causes


def name_problem(resource: Resource, name: str) -> str | None:
    if resource.names == "segment":
        if name in (".", "..") or "/" in name or "%" in name:
            return "may not contain '/' or '%' and may not be '.' or '..'"
        return None
    if resource.names == "label":
        return None if len(name) <= 63 and _LABEL.match(name) else LABEL_MESSAGE
    return None if len(name) <= 253 and _SUBDOMAIN.match(name) else SUBDOMAIN_MESSAGE
