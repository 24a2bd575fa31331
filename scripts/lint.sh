#!/usr/bin/env bash
# Static checks: protobuf lint and breaking changes (buf), generated code up to date, ruff, mypy.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== buf lint"
npx --no-install buf lint
echo "== buf breaking (against the released contract)"
# proto/BREAKING_BASELINE names the commit whose contract clients already use. Comparing with
# `main` compared main with itself on CI's clean clone; bump the baseline when a release ships.
baseline="$(tr -d '[:space:]' < proto/BREAKING_BASELINE)"
if git cat-file -e "${baseline}^{commit}" 2>/dev/null; then
  npx --no-install buf breaking --against ".git#ref=${baseline}"
else
  echo "baseline ${baseline} is not in this clone (shallow?): fetch it to check breaking changes" >&2
  exit 1
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
echo "== GraphQL SDL is current and does not break the released contract"
.venv/bin/python -m gateway.export_schema --check
