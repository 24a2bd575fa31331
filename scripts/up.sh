#!/usr/bin/env bash
# The main job: install everything, then run the whole mesh on embedded defaults
# (`counterpick up`). Extra arguments go to `counterpick up`, e.g. --edge-port 8080.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec .venv/bin/counterpick up "$@"
