#!/usr/bin/env bash
# Run the whole test suite (sets up .venv on first use). Extra arguments go to pytest, e.g.
#   ./run_tests.sh -m "not slow"  # skip the kill-and-resume, smoke and full-train.csv tests
#   ./run_tests.sh tests/stage2   # one folder
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh
export HF_HUB_OFFLINE=1
exec python -m pytest "$@"
