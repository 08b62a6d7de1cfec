#!/usr/bin/env bash
# Run the test suite (sets up .venv on first use). Extra arguments go to pytest, e.g.
#   ./run_tests.sh -m slow        # the slow integration, fault and end-to-end tests
#   ./run_tests.sh -m ""          # everything
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh
export HF_HUB_OFFLINE=1
if [ $# -eq 0 ]; then
  set -- -m "not slow"
fi
exec python -m pytest "$@"
