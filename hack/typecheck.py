"""Type-checks the project with strict mypy (make lint).

The `tke` namespace is made of folders that pyproject.toml's [tool.setuptools.package-dir]
maps (cmd/ is tke.cmd, internal/ is tke.internal, ...). mypy reads a module's name from its
path and cannot apply that mapping, so this hands mypy every source file together with its
module name; gen/ needs no mapping (gen/tke is the `tke` layout) and is on mypy's search path;
tests/ and bench/ are plain packages of the repository root. Arguments go to mypy.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def mapped_sources() -> Iterator[BuildSource]:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in table.items():
        if folder == "gen/tke":
            continue
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield BuildSource(str(path.relative_to(ROOT)), ".".join((package, *parts)))


def main(argv: list[str]) -> int:
    sources, options = process_options(["--config-file", "pyproject.toml", *argv, "tests", "bench"])
    options.mypy_path = ["gen", *options.mypy_path]
    sources += list(mapped_sources())
    try:
        result = build.build(sources, options, stdout=sys.stdout, stderr=sys.stderr)
    except CompileError as err:
        print("\n".join(err.messages), file=sys.stderr)
        return 2
    if result.errors:
        print("\n".join(result.errors))
        files = len({e.split(":", 1)[0] for e in result.errors})
        print(f"Found {len(result.errors)} errors in {files} files (checked {len(sources)} source files)")
        return 1
    print(f"Success: no issues found in {len(sources)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
