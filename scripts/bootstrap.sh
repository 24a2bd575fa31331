#!/usr/bin/env bash
# Installs what counterpick needs on a fresh machine: uv (if missing), the locked Python
# environment in .venv, and the build tools from npm (buf). Safe to run again; sourced by
# scripts/up.sh and scripts/test.sh. Needs Python >= 3.12 and pip somewhere on the machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# uv must never try to download an interpreter (no network for that here): use an installed one.
export UV_PYTHON_DOWNLOADS=never

find_python() {
  local candidate
  for candidate in python3.12 python3.13 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for candidate in "$(pyenv root)"/versions/3.1[2-9]*/bin/python3; do
      [ -x "$candidate" ] && { echo "$candidate"; return 0; }
    done
  fi
  return 1
}

python=$(find_python) || { echo "bootstrap: Python >= 3.12 not found" >&2; exit 1; }
if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then
  UV=(uv)
else
  if ! "$python" -m uv --version >/dev/null 2>&1; then
    echo "bootstrap: installing uv with $python -m pip" >&2
    "$python" -m pip install --quiet --user uv 2>/dev/null || "$python" -m pip install --quiet uv
  fi
  UV=("$python" -m uv)
fi

# The interpreter is named explicitly: pyenv shims may point elsewhere, and uv must not guess.
"${UV[@]}" sync --locked --quiet --python "$python"

# npm brings buf (proto lint) and dotaconstants (hero and patch constants the services read).
if [ -x node_modules/.bin/buf ] && [ -f node_modules/dotaconstants/build/heroes.json ] &&
   [ node_modules/.package-lock.json -nt package-lock.json ]; then
  :
elif command -v npm >/dev/null 2>&1; then
  npm ci --silent --no-audit --no-fund
else
  echo "bootstrap: npm is required (it installs buf and the dotaconstants package)" >&2
  exit 1
fi
