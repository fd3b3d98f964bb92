#!/usr/bin/env bash
# Create (or reuse) the project virtualenv at .venv and install the project with the given extras.
# Usage: scripts/venv.sh EXTRAS   (e.g. "jax" or "test"). Re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python3 -m venv .venv 2>/dev/null || python3 -m venv .venv
stamp=".venv/.installed-${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
  case ",${extras}," in
    *,tfserving,*|*,test,*)
      # The official TF Serving stubs require the full `tensorflow` distribution; tensorflow-cpu
      # (in the extra) provides the same package, so take the stubs alone (see pyproject.toml).
      .venv/bin/python -m pip install --quiet --no-deps "tensorflow-serving-api==2.21.0" ;;
  esac
  touch "$stamp"
fi
