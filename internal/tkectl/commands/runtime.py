"""What a command runs with: the configuration, the chosen context with command-line overrides,
the connection to its servers, and where output goes."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from tke.internal.tkectl.config import Config, Context
from tke.internal.tkectl.connection import Connection
from tke.internal.tkectl.errors import CliError, Exit, usage
from tke.internal.tkectl.kinds.base import Kind, Query
from tke.internal.tkectl.output import terminal_text


@dataclass
class Runtime:
    config: Config
    context_name: str
    context: Context
    conn: Connection
    tenant: str = ""
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def print(self, text: str) -> None:
        """A line for standard output (what servers sent is in it: `terminal_text`)."""
        if text:
            print(terminal_text(text), file=self.out, flush=True)

    def write(self, text: str) -> None:
        """Text for standard output as it is, but for what would drive a terminal."""
        self.out.write(terminal_text(text))
        self.out.flush()

    def warn(self, text: str) -> None:
        print(f"tkectl: {terminal_text(text)}", file=self.err, flush=True)


FILTER_FLAGS = {
    "cluster": "--cluster",
    "for-kind": "--for",
    "for-name": "--for",
    "pool": "--pool",
    "node": "--node",
    "pod-namespace": "--pod-namespace",
    "workload": "--workload",
    "pod": "--pod",
}


def query(kind: Kind, rt: Runtime, *, selector: str, all_tenants: bool, filters: dict[str, str]) -> Query:
    """A Query for `kind`, refusing filters the kind does not understand."""
    given = {k: v for k, v in filters.items() if v}
    for key in given:
        if key not in kind.filters:
            raise usage(f"{FILTER_FLAGS[key]} does not apply to {kind.plural}")
    if all_tenants and not kind.tenanted:
        raise usage(f"{kind.plural} belong to no tenant: -A/--all-tenants does not apply")
    return Query(tenant="*" if all_tenants else rt.tenant, selector=selector, filters=given)


def for_filter(value: str) -> dict[str, str]:
    """--for cluster/demo -> the events' involved-object filters."""
    if not value:
        return {}
    kind, _, name = value.partition("/")
    kinds = {"cluster": "Cluster", "clusters": "Cluster", "machine": "Machine", "machines": "Machine"}
    if kind.lower() not in kinds or not name:
        raise usage(f"--for takes cluster/NAME or machine/NAME, not {value!r}")
    return {"for-kind": kinds[kind.lower()], "for-name": name}


class Outcome:
    """The exit code of a command that goes on after a failure (several names or documents):
    each failure is reported as it happens, and the last one's code is the command's."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.code = Exit.OK

    def fail(self, err: CliError, prefix: str = "") -> None:
        self.rt.warn(f"{prefix}{err.message}")
        self.code = err.exit_code


def split_names(args: Sequence[str]) -> tuple[str, list[str]]:
    """`get clusters a b` or `get cluster/a cluster/b` -> ("clusters", ["a", "b"])."""
    if not args:
        raise usage("name a resource type, for example `tkectl get clusters`")
    first = args[0]
    if "/" not in first:
        return first, list(args[1:])
    types = {a.split("/", 1)[0] for a in args}
    if len(types) != 1:
        raise usage("name objects of one resource type at a time")
    return types.pop(), [a.split("/", 1)[1] for a in args]
