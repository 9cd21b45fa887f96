"""Maps the repository's folders under one distribution namespace, `tke`.

The generated contracts live in gen/tke (tke.meta.v1, tke.platform.v1, ...); cmd/, internal/
and plugins/ become tke.cmd, tke.internal and tke.plugins. A top-level `cmd` would shadow the
standard library's cmd module, and `internal` or `plugins` would collide with anything else in
site-packages. Metadata and dependencies are in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup

ROOTS = {"tke": "gen/tke", "tke.cmd": "cmd", "tke.internal": "internal", "tke.plugins": "plugins"}


def packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        for init in sorted(Path(folder).rglob("__init__.py")):
            rel = init.parent.relative_to(folder).parts
            found.append(".".join((name, *rel)))
    return found


setup(packages=packages(), package_dir=ROOTS)
