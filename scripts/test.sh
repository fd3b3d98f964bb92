#!/usr/bin/env bash
# The whole test suite: install, lint (ruff), type-check (mypy), then pytest (unit + integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh test
bash scripts/install_tools.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== pytest"; pytest -q -p no:cacheprovider "$@"
