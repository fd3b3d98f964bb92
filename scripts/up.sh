#!/usr/bin/env bash
# The whole local stack: install, export the example models, start the JAX runtime and the gateway.
# Ctrl-C stops both. State (models, XLA cache, generated config) lives in .local/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh jax,client
exec .venv/bin/gateway up --workdir .local "$@"
