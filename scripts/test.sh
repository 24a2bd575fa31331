#!/usr/bin/env bash
# The whole test suite from a fresh machine: install, static checks, then pytest against real
# PostgreSQL and Redis (the machine's, started here if they are down) and a tansu broker the
# tests start themselves. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh

ensure_machine_services() {
  # Developer and CI machines run PostgreSQL and Redis; bring them back if they were stopped.
  if ! .venv/bin/python - <<'PY' 2>/dev/null
import socket
socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
PY
  then
    echo "test: PostgreSQL is down, starting it" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  if ! .venv/bin/python - <<'PY' 2>/dev/null
import socket
socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
PY
  then
    echo "test: Redis is down, starting it" >&2
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  fi
}

ensure_browser() {
  # The browser test drives Debian's Chromium with playwright-core (never a browser download).
  if [ ! -x /usr/bin/chromium ]; then
    echo "test: installing Debian's chromium for the browser test" >&2
    apt-get install -y chromium >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
  fi
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund)
  fi
}

bash scripts/lint.sh
ensure_machine_services
ensure_browser

set +e
.venv/bin/pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
