#!/usr/bin/env bash
# The whole test suite: install, lint (ruff), type-check (mypy), then pytest (unit + integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh test
bash scripts/install_tools.sh
bash scripts/mlserver_venv.sh   # a real MLServer for tests/integration/test_mlserver.py
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== pytest"; pytest -q -p no:cacheprovider "$@"
