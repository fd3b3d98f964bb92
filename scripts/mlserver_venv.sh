#!/usr/bin/env bash
# Create (or reuse) .venv-mlserver: a real MLServer for tests/integration/test_mlserver.py, in a venv of its
# own since MLServer pins its own fastapi, grpcio and protobuf. Re-installs only when this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=".venv-mlserver"
stamp="${venv}/.installed"
if [ ! -f "$stamp" ] || [ scripts/mlserver_venv.sh -nt "$stamp" ]; then
  python3 -m venv "$venv"
  "${venv}/bin/python" -m pip install --quiet --upgrade pip
  "${venv}/bin/python" -m pip install --quiet "mlserver==1.7.1" numpy
  "${venv}/bin/mlserver" --version >/dev/null
  touch "$stamp"
fi
