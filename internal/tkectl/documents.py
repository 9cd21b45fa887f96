"""Objects in files: YAML or JSON documents in the proto's JSON mapping with a `kind:` field
(several YAML documents per file, or `kind: List` with `items`), and the reverse for -o yaml/json
and edit."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from tke.internal.tkectl import yamltext
from tke.internal.tkectl.errors import CliError, Exit, usage
from tke.internal.tkectl.kinds.base import Kind
from tke.internal.tkectl.kinds.registry import by_file_kind


@dataclass(frozen=True)
class Document:
    kind: Kind
    message: Message
    fields: dict[str, Any]  # the document as written, without kind and extra keys
    extra: dict[str, Any]  # the kind's extra keys (a user's password)
    where: str  # "cluster.yaml, document 2"


def read_source(path: str) -> str:
    """A file's text; "-" is standard input."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        raise usage(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise usage(f"{path} is not UTF-8 text") from None


def parse(text: str, name: str) -> list[Document]:
    try:
        raw = [d for d in yamltext.load_all(text, name) if d is not None]
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "syntax error"
        raise usage(f"{name} is not valid YAML or JSON: {' '.join(str(err).split()) or first}") from None
    out: list[Document] = []
    for i, doc in enumerate(raw, 1):
        where = name if len(raw) == 1 else f"{name}, document {i}"
        if isinstance(doc, dict) and doc.get("kind") == "List":
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise usage(f"{where}: items of a List must be a list")
            out += [_document(item, f"{where}, item {j}") for j, item in enumerate(items, 1)]
        else:
            out.append(_document(doc, where))
    if not out:
        raise usage(f"{name} holds no objects")
    return out


def _document(doc: object, where: str) -> Document:
    if not isinstance(doc, dict):
        raise usage(f"{where}: expected an object with a kind: field")
    values = dict(doc)
    kind_field = values.pop("kind", None)
    if not isinstance(kind_field, str) or not kind_field:
        raise usage(f"{where}: missing kind: (for example kind: Cluster)")
    try:
        kind = by_file_kind(kind_field)
    except CliError as err:
        raise usage(f"{where}: {err.message}") from None
    extra = {key: values.pop(key) for key in kind.extra_keys if key in values}
    values.pop("apiVersion", None)  # tolerated, as people copy Kubernetes manifests
    message = kind.message()
    try:
        json_format.ParseDict(_plain(values), message)
    except json_format.ParseError as err:
        raise usage(f"{where}: {kind.kind}: {' '.join(str(err).split())}") from None
    return Document(kind, message, values, extra, where)


def _plain(value: Any) -> Any:
    """YAML gives datetimes and dates for unquoted timestamps; the JSON mapping wants strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text.replace("+00:00", "Z") if "T" in text or " " in text else text
    return value


def to_dict(kind: Kind, message: Message) -> dict[str, Any]:
    try:
        return {"kind": kind.kind, **json_format.MessageToDict(message)}
    except (json_format.Error, ValueError) as err:  # a Timestamp or Duration out of range: a wrong answer
        raise CliError(Exit.ERROR, f"the server sent a {kind.kind} that has no JSON form: {err}") from None


def list_dict(kind: Kind, messages: Sequence[Message]) -> dict[str, Any]:
    return {"kind": "List", "items": [to_dict(kind, m) for m in messages]}


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, with every string holding a character that is not printable in
    double quotes, where each is an escape (`\\n`, `\\N`, `\\L`, `\\x9B`). PyYAML wrote
    line breaks (NEL, U+2028 too) as they came in single-quoted strings, where the terminal
    escapes of what tkectl prints (output.terminal_text) are no escapes: an annotation holding
    NEL came back from `get -o yaml` as the six characters `\\u0085`, and `apply` of that file
    changed it."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None if value.isprintable() else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
