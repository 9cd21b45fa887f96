#!/usr/bin/env bash
# Generates Python code and typing stubs from proto/ into a directory (gen/ by default), and
# tke/descriptors.binpb: the contracts with their comments, which server reflection serves so
# that `grpcurl describe` shows the API documentation.
# --check generates into a scratch directory and fails when gen/ differs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"
generate() {
  local out
  out=$(realpath -m "$1")
  rm -rf "$out/tke"
  mkdir -p "$out/tke"
  mapfile -t protos < <(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
  (cd proto && "$ROOT/$PY" -m grpc_tools.protoc -I . \
      --python_out="$out" --grpc_python_out="$out" \
      --mypy_out="$out" --mypy_grpc_out="$out" \
      --include_imports --include_source_info --descriptor_set_out="$out/tke/descriptors.binpb" "${protos[@]}" \
      >"$out/protoc.log" 2>&1) || { cat "$out/protoc.log" >&2; return 1; }
  rm -f "$out/protoc.log"
  # Every generated folder below tke/ is a package; tke itself is a namespace package, whose
  # other portions (tke.cmd, tke.internal, tke.plugins) pyproject.toml maps from their folders.
  find "$out/tke" -mindepth 1 -type d -exec touch {}/__init__.py \;
  touch "$out/tke/py.typed"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generate "$tmp"
if [ "${1:-gen}" = "--check" ]; then
  if ! diff -r -q "$tmp/tke" gen/tke -x __pycache__ >/dev/null; then
    diff -r -q "$tmp/tke" gen/tke -x __pycache__ || true
    echo "gen/ is stale: run 'make gen' and commit the result" >&2
    exit 1
  fi
  echo "gen/ is up to date"
else
  # Swap the whole tree at once so that running programs never see it half-written.
  mkdir -p gen
  rm -rf gen/tke.old
  [ -d gen/tke ] && mv gen/tke gen/tke.old
  mv "$tmp/tke" gen/tke
  rm -rf gen/tke.old
  echo "generated gen/tke from proto/"
fi
