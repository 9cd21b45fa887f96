"""The documentation points only at what the repository holds, so it cannot rot silently when
code moves: every relative Markdown link, every repository path written in backticks
(`internal/...`, `tests/...`, ...) and every module named in backticks (`tke.internal...`,
`tests.support...`) must exist; and the README's layout table lists exactly the folders there are.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Folders a path written in the documentation may start with.
TOP_FOLDERS = (
    ".ci", "bench", "bench-results", "cmd", "deploy", "docs", "examples", "gen", "hack", "internal", "plugins",
    "proto", "tests",
)  # fmt: skip
# Where the `tke` namespace's packages live (pyproject.toml's [tool.setuptools.package-dir]), and
# the repository's own packages.
MODULE_ROOTS = {
    "tke.cmd": "cmd", "tke.internal": "internal", "tke.plugins": "plugins", "tests": "tests", "bench": "bench",
}  # fmt: skip

FENCE = re.compile(r"^\s*```.*?^\s*```", re.M | re.S)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PATH = re.compile("(?:{})/[^\\s`'\"]*".format("|".join(map(re.escape, TOP_FOLDERS))))
MODULE = re.compile("(?:{})(?:[.:][A-Za-z_]\\w*)+".format("|".join(map(re.escape, MODULE_ROOTS))))
# Characters that make a path a pattern or a placeholder: only the part before them must exist.
PATTERN = re.compile(r"[*<{$]|\.\.\.")


def _ignored_folders() -> list[str]:
    """Folder patterns .gitignore leaves out of the repository (virtualenvs, caches, build output)."""
    patterns = [".git"]
    for entry in (ROOT / ".gitignore").read_text().split():
        if entry.endswith("/") and not entry.startswith(("#", "!")) and "/" not in entry.strip("/"):
            patterns.append(entry.strip("/"))
    return patterns


IGNORED = _ignored_folders()


def _kept(path: Path) -> bool:
    return not any(fnmatch.fnmatch(part, p) for part in path.relative_to(ROOT).parts for p in IGNORED)


def _documents() -> list[Path]:
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [s for s in subfolders if _kept(Path(folder, s))]
        found += [Path(folder, f) for f in files if f.endswith(".md")]
    return sorted(found)


DOCS = _documents()


def _prose(doc: Path) -> str:
    """The document without its fenced code blocks (which show the reader's own files too)."""
    return FENCE.sub("", doc.read_text())


def _anchors(doc: Path) -> set[str]:
    """The anchors of a document's headings, as GitHub makes them."""
    headings = re.findall(r"^#+\s+(.+)$", _prose(doc), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _path_problem(text: str) -> str | None:
    """A path exists; of a pattern (`deploy/cni/tke.d/*`), the folder before the pattern does."""
    path = text
    if (cut := PATTERN.search(text)) is not None:
        path = text[: cut.start()].rpartition("/")[0]
    return None if (ROOT / path).exists() else f"{text}: no such file or folder"


def _defines(source: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+def|def|class)\s+{name}\b|^{name}\s*[:=]", source, re.M) is not None


def _module_problem(text: str) -> str | None:
    """A dotted name resolves to a package, a module, or a name defined at a module's top level."""
    root = next(m for m in MODULE_ROOTS if text.startswith(m + "."))
    here = ROOT / MODULE_ROOTS[root]
    rest = re.split(r"[.:]", text[len(root) + 1 :])
    while rest and (here / rest[0]).is_dir():
        here = here / rest.pop(0)
    if not rest:
        return None
    module = here / f"{rest[0]}.py"
    if module.exists():
        if len(rest) == 1 or _defines(module.read_text(), rest[1]):
            return None
        return f"{text}: {module.relative_to(ROOT)} defines no {rest[1]}"
    init = here / "__init__.py"
    if init.exists() and _defines(init.read_text(), rest[0]):
        return None
    return f"{text}: no such module"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(doc: Path) -> None:
    problems = []
    for target in LINK.findall(_prose(doc)):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = doc.parent / path if path else doc
        if not linked.exists():
            problems.append(f"link {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            problems.append(f"link {target}: no such heading")
    assert not problems, problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_paths_and_modules_in_backticks_exist(doc: Path) -> None:
    problems = []
    for span in CODE_SPAN.findall(_prose(doc)):
        for word in (w.rstrip(".,;:)") for w in span.split()):
            if PATH.fullmatch(word):
                problems.append(_path_problem(word))
            elif MODULE.fullmatch(word):
                problems.append(_module_problem(word))
    found = [p for p in problems if p is not None]
    assert not found, found


def test_readme_layout_table_lists_exactly_the_folders() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    listed = {word for row in rows for word in CODE_SPAN.findall(row.split("|")[1])}
    assert listed, "no layout table under '## Repository layout' in README.md"
    missing_on_disk = sorted(p for p in listed if not (ROOT / p).exists())
    assert not missing_on_disk, f"the layout table lists what is not there: {missing_on_disk}"
    # The folders of the repository: those holding tracked files (not caches, venvs or outputs).
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    folders = {f"{path.split('/')[0]}/" for path in tracked if "/" in path}
    folders |= {
        "/".join(path.split("/")[:2]) + "/"
        for path in tracked
        if path.count("/") >= 2 and path.split("/")[0] in ("internal", "plugins") and path.endswith(".py")
    }
    unlisted = sorted(folders - listed)
    assert not unlisted, f"folders missing from the README's layout table: {unlisted}"
