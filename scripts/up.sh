#!/usr/bin/env bash
# The whole local stack: install, export the example models (JAX and TF, one set of weights), start the
# JAX runtime, TF Serving (the real binary when on PATH, the project's runtime of its API otherwise) and
# the gateway. Ctrl-C stops them all. State (models, XLA cache, generated config) lives in .local/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh jax,tfserving,client
exec .venv/bin/gateway up --workdir .local "$@"
