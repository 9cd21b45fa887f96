"""Every regular expression of the product that checks a whole value is applied with fullmatch.

`re.match` (or a compiled pattern's `.match`) with a pattern ending in `$` also accepts the value
followed by a newline ("eth0\\n", "prod\\n", "1.30.2\\n"): tenants' names, versions and ids passed
as new spellings of valid ones, and reached files and commands. This test reads the product's
source: a pattern literal ending in `$` (a module-level `re.compile`, or a literal given to
`re.match`) must never be applied with `match`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ["internal", "plugins", "cmd"]


def _anchored(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith("$")


def _matches_whole_values_with_match(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    anchored: set[str] = set()  # names bound to re.compile("...$")
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            compiles = isinstance(call.func, ast.Attribute) and call.func.attr == "compile"
            if compiles and call.args and _anchored(call.args[0]):
                anchored |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "match"):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Name) and owner.id in anchored:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {owner.id}.match")
        elif isinstance(owner, ast.Name) and owner.id == "re" and node.args and _anchored(node.args[0]):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: re.match")
    return found


def test_anchored_patterns_are_applied_with_fullmatch() -> None:
    files = [p for d in PRODUCT for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 100  # the product was found
    found = [line for path in files for line in _matches_whole_values_with_match(path)]
    assert not found, "use fullmatch: `$` also matches before a final newline:\n" + "\n".join(found)
