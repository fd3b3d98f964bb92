#!/usr/bin/env bash
# System tools the tests use when present: promtool (Debian package prometheus). Installed only when
# missing and when we can (root with apt); tests that need a tool skip with a reason otherwise.
set -uo pipefail
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
    || echo "warning: could not install prometheus; promtool checks will be skipped"
fi
exit 0
