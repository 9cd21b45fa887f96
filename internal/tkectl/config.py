"""tkectl's configuration file: named contexts (where the apiserver and tke-ipamd are, how to
authenticate, which tenant) and the current one.

The file is YAML, ~/.tke/config unless --config or $TKECONFIG names another; it holds tokens, so
it is written with mode 0600:

    current-context: dev
    contexts:
      dev:
        server: 127.0.0.1:50051          # host:port or unix:/path
        token: ...                        # set by `tkectl login`
        username: admin                   # login's default user
        ca-file: /etc/tke/pki/ca.crt      # TLS; with cert-file and key-file, mutual TLS
        cert-file: ""
        key-file: ""
        tls: false                        # TLS with the system's roots when ca-file is empty
        tls-server-name: ""               # the name the server certificate is checked against
        tenant: team-a                    # default of -n/--tenant
        ipamd:                            # tke-ipamd, for pools, bindings and allocations
          server: unix:/run/tke/ipamd.sock
          token: ""

A configuration file may come from someone else (a shared or downloaded one), so what it holds
is checked, never taken as it comes: every value but `tls` is a string (a number is read as its
text), `tls` is true or false; a YAML list or mapping is refused, also one built from aliases,
which would otherwise be expanded into its text (600 bytes of nested aliases made a token of
500 MB). A token is sent as a header value, so it is one line of printable ASCII
(`token_error`); a usage error names the context and key, never the token.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tke.internal.tkectl import yamltext
from tke.internal.tkectl.errors import usage

DEFAULT_PATH = Path("~/.tke/config")
# A token is sent as the value of an authorization header: printable ASCII, bounded.
MAX_TOKEN = 8192


def token_error(token: str) -> str | None:
    """Why `token` cannot be sent as a bearer token, or None."""
    if len(token) > MAX_TOKEN or not (token.isascii() and token.isprintable()):
        return f"is no usable bearer token (one line of at most {MAX_TOKEN} printable ASCII characters)"
    return None


_E = TypeVar("_E", bound="Endpoint")


@dataclass(frozen=True)
class Endpoint:
    """One server and how to reach it."""

    server: str = ""
    token: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls: bool = False
    tls_server_name: str = ""

    @property
    def secure(self) -> bool:
        return self.tls or bool(self.ca_file)


@dataclass(frozen=True)
class Context(Endpoint):
    """An apiserver endpoint, the tenant to act in, and optionally a tke-ipamd endpoint."""

    username: str = ""
    tenant: str = ""
    ipamd: Endpoint = field(default_factory=Endpoint)


@dataclass
class Config:
    path: Path
    current_context: str = ""
    contexts: dict[str, Context] = field(default_factory=dict)

    def context(self, name: str = "") -> tuple[str, Context]:
        """The named context, else the current one; an empty context when the file has none."""
        chosen = name or self.current_context
        if not chosen:
            return "", Context()
        if chosen not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise usage(f'no context "{chosen}" in {self.path} (contexts: {known})')
        return chosen, self.contexts[chosen]

    def save(self) -> None:
        data: dict[str, Any] = {
            "current-context": self.current_context,
            "contexts": {name: context_dict(ctx) for name, ctx in sorted(self.contexts.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".config-")
        try:
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump(data, f, sort_keys=False)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def config_path(flag: str = "") -> Path:
    """--config, else $TKECONFIG, else ~/.tke/config."""
    return Path(flag or os.environ.get("TKECONFIG") or DEFAULT_PATH).expanduser()


def load(path: Path) -> Config:
    """The file at `path`; an empty configuration when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Config(path)
    except OSError as err:
        raise usage(f"cannot read {path}: {err.strerror}") from None
    try:
        docs = yamltext.load_all(text, str(path))
    except yaml.YAMLError as err:
        raise usage(f"{path} is not valid YAML: {_first_line(err)}") from None
    if len(docs) > 1:
        raise usage(f"{path}: expected one document, a mapping with current-context and contexts")
    data = (docs[0] if docs else None) or {}
    if not isinstance(data, dict):
        raise usage(f"{path}: expected a mapping with current-context and contexts")
    contexts = data.get("contexts") or {}
    if not isinstance(contexts, dict):
        raise usage(f"{path}: contexts must be a mapping of name to context")
    current = data.get("current-context")
    if not _scalar(current):
        raise usage(f"{path}: current-context must be a context's name")
    return Config(
        path,
        str(current or ""),
        {_name(path, name): _context(path, str(name), value) for name, value in contexts.items()},
    )


def _scalar(value: object) -> bool:
    """A value read as its text: None, a string, a number (not a list, a mapping, a date...)."""
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _name(path: Path, name: object) -> str:
    if not _scalar(name) or name is None:
        raise usage(f"{path}: the name of a context must be a string")
    return str(name)


def _context(path: Path, name: str, value: object) -> Context:
    if not isinstance(value, dict):
        raise usage(f"{path}: context {name} must be a mapping")
    values = dict(value)
    ipamd = values.pop("ipamd", None) or {}
    if not isinstance(ipamd, dict):
        raise usage(f"{path}: context {name}: ipamd must be a mapping")
    return replace(_fill(Context(), values, path, name), ipamd=_fill(Endpoint(), ipamd, path, f"{name}.ipamd"))


def _fill(base: _E, values: dict[str, Any], path: Path, where: str) -> _E:
    known = {f.name.replace("_", "-"): f for f in fields(base) if f.name != "ipamd"}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        f = known.get(str(key))
        if f is None:
            raise usage(f"{path}: context {where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if f.type in ("bool", bool):
            if not isinstance(value, bool):
                raise usage(f"{path}: context {where}: {key} must be true or false")
            changes[f.name] = value
        elif not _scalar(value):
            raise usage(f"{path}: context {where}: {key} must be a string, not a YAML {type(value).__name__}")
        else:
            changes[f.name] = "" if value is None else str(value)
    return replace(base, **changes)


def context_dict(ctx: Context) -> dict[str, Any]:
    out = _endpoint_dict(ctx, exclude={"ipamd"})
    ipamd = _endpoint_dict(ctx.ipamd)
    if ipamd:
        out["ipamd"] = ipamd
    return out


def _endpoint_dict(endpoint: Endpoint, exclude: set[str] | None = None) -> dict[str, Any]:
    """Only what is set, in field order."""
    return {
        f.name.replace("_", "-"): getattr(endpoint, f.name)
        for f in fields(endpoint)
        if f.name not in (exclude or set()) and getattr(endpoint, f.name)
    }


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
