"""Checks what `pip install` ships (make lint): a wheel of the project holds the product only,
the `tke` namespace and its metadata, and no test double, test helper or benchmark driver
(those live in tests/ and bench/). Builds the wheel into .build/wheel."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".build" / "wheel"
# Path segments that are not product code.
NOT_PRODUCT = re.compile(
    r"(^|/)(tests?|testing|bench|benchmarks?|fakes?|conftest)(/|\.py$|$)"  # folders and modules
    r"|(^|/)(fake|test)_[^/]*\.py$"
)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(OUT), str(ROOT)],
        check=True,
    )
    (wheel,) = OUT.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    problems = [f"outside the tke namespace: {n}" for n in names if not re.match(r"tke/|tke-[^/]+\.dist-info/", n)]
    problems += [f"not product code: {n}" for n in names if NOT_PRODUCT.search(n)]
    with zipfile.ZipFile(wheel) as z:
        problems += [
            f"defines a fake: {n}" for n in names if n.endswith(".py") and re.search(rb"^class Fake", z.read(n), re.M)
        ]
    for problem in problems:
        print(f"check-package: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"check-package: {wheel.name} holds {len(names)} files, the product only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
