"""Lists the packages of the `tke` distribution: every folder under the roots that
pyproject.toml's [tool.setuptools.package-dir] maps into the one `tke` namespace (gen/tke,
cmd/, internal/, plugins/). Metadata, dependencies and the mapping itself are in pyproject.toml.
"""

import tomllib
from pathlib import Path

from setuptools import setup

ROOTS: dict[str, str] = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        found.append(name)
        for sub in sorted(p for p in Path(folder).rglob("*") if p.is_dir() and any(p.glob("*.py"))):
            found.append(".".join((name, *sub.relative_to(folder).parts)))
    return sorted(set(found))


setup(packages=packages())
