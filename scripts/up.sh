#!/usr/bin/env bash
# The whole local stack: install, build the example models (JAX, TF and PyTorch, one set of weights), start
# the JAX runtime, TF Serving (the real binary when on PATH, the project's runtime of its API otherwise),
# TorchServe (needs Java 17) and the gateway. Ctrl-C stops them all. `--no-tfserving` / `--no-torchserve`
# leave one out. State (models, XLA cache, generated configs, TorchServe's logs and keys) lives in .local/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh jax,tfserving,torchserve,client
exec .venv/bin/gateway up --workdir .local "$@"
