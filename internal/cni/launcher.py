"""The launchers of the node's CNI plugins: the small script a runtime executes for cni-switch or
tke-ipamc, written once per node by deploy/cni/install-node.sh (`python -I -m
tke.internal.cni.launcher tke.cmd.cni_switch > /opt/cni/bin/cni-switch`).

A plugin is a process per container and verb, so its interpreter's start-up is most of its
cost, and most of that start-up is `site`: the .pth files of the environment (an editable
install's import hook alone imports pathlib and re), which a plugin needs none of. The launcher
therefore starts the interpreter isolated and without `site` (`-IS`: no PYTHON* variables, no
user site, no current directory on the path, no .pth files) and says itself where the `tke`
package is: the directories the installation put it in, asked of the same interpreter (with
`site`) when the launcher is written. The environment's site-packages come after, so a
third-party import still resolves as it would with `site`. Invariants:
- What the launcher imports is what the installation holds: the paths are absolute and fixed
  when it is written; nothing a caller of the plugin sets (environment, working directory)
  changes them. Reinstalling the package elsewhere means writing the launchers again.
- `tke` is a namespace package (it has no __init__.py); the launcher creates it with those
  directories as its path, as the import system would.
"""

from __future__ import annotations

import os
import sys
import sysconfig


def tke_path() -> list[str]:
    """The directories of the `tke` namespace package as this interpreter's import system sees
    it: its own, and those that hold its top-level subpackages when an editable install maps
    them elsewhere (tke.cmd -> <checkout>/cmd, ...)."""
    import importlib

    tke, cmd, internal = (importlib.import_module(name) for name in ("tke", "tke.cmd", "tke.internal"))
    if getattr(tke, "__file__", None):
        raise RuntimeError("tke is expected to be a namespace package (no __init__.py)")
    # An editable install's hook adds a placeholder entry to a namespace's path: not a folder.
    paths = [os.path.abspath(p) for p in tke.__path__ if os.path.isdir(p)]
    for sub in (cmd, internal):
        name = sub.__name__.rpartition(".")[2]
        for folder in (p for p in sub.__path__ if os.path.isdir(p)):
            parent, base = os.path.split(os.path.abspath(folder))
            if base != name:
                raise RuntimeError(f"{sub.__name__} lives in {folder}, which the launcher cannot name")
            if parent not in paths:
                paths.append(parent)
    return paths


def site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(os.path.abspath(paths[k]) for k in ("purelib", "platlib")))


def launcher(module: str, python: str = "") -> str:
    """The launcher script of the plugin whose entry module is `module` (tke.cmd.*), run by
    `python` (default: this interpreter)."""
    return (
        f"#!{python or sys.executable} -IS\n"
        f"# Written by tke.internal.cni.launcher (see its docstring): isolated, without site.\n"
        f"import sys\n"
        f'tke = sys.modules["tke"] = type(sys)("tke")\n'
        f"tke.__path__ = {tke_path()!r}\n"
        f"sys.path += {site_packages()!r}\n"
        f"from {module} import main\n"
        f"main()\n"
    )


def main() -> None:
    args = sys.argv[1:]
    if len(args) not in (1, 2) or not args[0].startswith("tke.cmd."):
        sys.exit("usage: python -I -m tke.internal.cni.launcher tke.cmd.<plugin> [python]")
    sys.stdout.write(launcher(*args))


if __name__ == "__main__":
    main()
