#!/usr/bin/env bash
# Create .venv and install the project (with its test tools) on first use; reuse it afterwards.
# Reinstalls when pyproject.toml changes. Sourced by run_all.sh and run_tests.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
STAMP="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"

if [ ! -f "$STAMP" ]; then
  if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: melanoma-stack needs Python >= 3.10 (found: $("$PYTHON_BIN" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  echo "setting up $VENV (first run: installs torch, timm, LightGBM, XGBoost, Optuna; a few minutes)..." >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test,postgres]"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
