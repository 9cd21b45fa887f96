"""config set-context, use-context, get-contexts, current-context, delete-context and view."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tke.internal.tkectl.config import Config, Context, Endpoint, context_dict
from tke.internal.tkectl.documents import dump_yaml
from tke.internal.tkectl.errors import CliError, Exit, usage
from tke.internal.tkectl.output import table

# set-context options: (attribute of the context, attribute of its ipamd endpoint)
CONTEXT_FIELDS = ("server", "token", "username", "ca_file", "cert_file", "key_file", "tls_server_name", "tenant")
IPAMD_FIELDS = ("server", "token", "ca_file", "cert_file", "key_file", "tls_server_name")


def set_context(config: Config, name: str, values: dict[str, Any], use: bool) -> str:
    existed = name in config.contexts
    current = config.contexts.get(name, Context())
    changes = {f: values[f] for f in CONTEXT_FIELDS if values.get(f) is not None}
    if values.get("tls") is not None:
        changes["tls"] = values["tls"]
    ipamd_changes = {f: values[f"ipamd_{f}"] for f in IPAMD_FIELDS if values.get(f"ipamd_{f}") is not None}
    if values.get("ipamd_tls") is not None:
        ipamd_changes["tls"] = values["ipamd_tls"]
    ipamd: Endpoint = replace(current.ipamd, **ipamd_changes)
    config.contexts[name] = replace(current, **changes, ipamd=ipamd)
    if use or not config.current_context:
        config.current_context = name
    save(config)
    verb = "modified" if existed else "created"
    return f'context "{name}" {verb}' + (" and selected" if config.current_context == name else "")


def use_context(config: Config, name: str) -> str:
    if name not in config.contexts:
        raise usage(f'no context "{name}" in {config.path}')
    config.current_context = name
    save(config)
    return f'switched to context "{name}"'


def delete_context(config: Config, name: str) -> str:
    if name not in config.contexts:
        raise CliError(Exit.NOT_FOUND, f'NOT_FOUND: no context "{name}" in {config.path}', "NOT_FOUND")
    del config.contexts[name]
    if config.current_context == name:
        config.current_context = ""
    save(config)
    return f'context "{name}" deleted'


def get_contexts(config: Config) -> str:
    rows = [
        ["*" if name == config.current_context else "", name, ctx.server, ctx.ipamd.server, ctx.tenant, ctx.username]
        for name, ctx in sorted(config.contexts.items())
    ]
    return table(["CURRENT", "NAME", "SERVER", "IPAMD", "TENANT", "USER"], [[c or "" for c in r] for r in rows])


def view(config: Config, show_secrets: bool) -> str:
    def redact(ctx: Context) -> dict[str, Any]:
        data = context_dict(ctx)
        if not show_secrets:
            for section in (data, data.get("ipamd", {})):
                if section.get("token"):
                    section["token"] = "REDACTED"
        return data

    return dump_yaml(
        {
            "current-context": config.current_context,
            "contexts": {name: redact(ctx) for name, ctx in sorted(config.contexts.items())},
        }
    ).rstrip("\n")


def save(config: Config) -> None:
    try:
        config.save()
    except OSError as err:
        raise CliError(Exit.ERROR, f"cannot write {config.path}: {err.strerror}") from None
