#!/usr/bin/env bash
# Type-checks the project. mypy does not understand setup.py's folder mapping, so it checks a
# view of the `tke` namespace made of symlinks (gen/tke's contents plus cmd/, internal/,
# plugins/) under .build/typecheck, and the tests against it.
set -euo pipefail
cd "$(dirname "$0")/.."
view=.build/typecheck/tke
rm -rf .build/typecheck && mkdir -p "$view"
for entry in gen/tke/*; do ln -s "$PWD/$entry" "$view/$(basename "$entry")"; done
ln -s "$PWD/cmd" "$view/cmd"
ln -s "$PWD/internal" "$view/internal"
ln -s "$PWD/plugins" "$view/plugins"
MYPYPATH=.build/typecheck .venv/bin/mypy --config-file pyproject.toml \
  .build/typecheck/tke/cmd .build/typecheck/tke/internal .build/typecheck/tke/plugins tests "$@"
