#!/usr/bin/env bash
# Checks the contracts in proto/ with buf (PyPI buf-bin, in the venv): style and comments
# (`buf lint`, rules in buf.yaml) and compatibility with the last release (`buf breaking`).
#
# The release baseline is proto/released.binpb, a buf image committed with each release: it works
# offline and in a shallow CI clone, where no git history or tag is available.
#   hack/proto-lint.sh             lint, then breaking changes against proto/released.binpb
#   hack/proto-lint.sh --release   write proto/released.binpb from proto/ (run when tagging a release)
set -euo pipefail
cd "$(dirname "$0")/.."
buf=.venv/bin/buf
baseline=proto/released.binpb
if [[ ! -x $buf ]]; then
  echo "proto-lint: $buf missing: run \`make setup\` (buf-bin is a dev dependency)" >&2
  exit 1
fi
if [[ ${1:-} == --release ]]; then
  "$buf" build -o "$baseline"
  echo "proto-lint: wrote $baseline; commit it with the release"
  exit 0
fi
"$buf" lint
if [[ -f $baseline ]]; then
  "$buf" breaking --against "$baseline"
else
  echo "proto-lint: no $baseline yet: breaking-change check skipped (hack/proto-lint.sh --release)" >&2
fi
echo "proto-lint: ok"
