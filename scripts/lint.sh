#!/usr/bin/env bash
# Static checks: protobuf lint and breaking changes (buf), generated code up to date, ruff, mypy.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== buf lint"
npx --no-install buf lint
echo "== buf breaking (against main)"
if git rev-parse --verify --quiet main >/dev/null &&
   git ls-tree -r --name-only main -- proto | grep -q '\.proto$'; then
  npx --no-install buf breaking --against '.git#branch=main'
else
  echo "main has no protos yet: nothing to compare against"
fi
echo "== generated code is up to date"
bash scripts/generate.sh >/dev/null
if [ -n "$(git status --porcelain -- proto/gen)" ]; then
  git status --short -- proto/gen
  echo "proto/gen differs from what scripts/generate.sh produces: run it and commit" >&2
  exit 1
fi
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy --strict"
.venv/bin/mypy services gateway tests deploy $([ -d bench ] && echo bench)
echo "== docker-compose.yml agrees with the code's settings"
.venv/bin/python deploy/check_compose.py
