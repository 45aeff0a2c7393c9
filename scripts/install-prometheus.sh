#!/usr/bin/env bash
# Installs promtool, amtool and prometheus (Debian's prometheus 2.42 and prometheus-alertmanager
# 0.25) for tests/observability when they are missing. Idempotent; needs root (CI runs as root),
# otherwise it only says what to do. The packages' services are not started: the tests run the
# binaries as plain processes on 127.0.0.1.
set -euo pipefail

if command -v promtool >/dev/null && command -v amtool >/dev/null && command -v prometheus >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-prometheus: promtool/amtool missing; as root run:" \
         "apt-get install -y --no-install-recommends prometheus prometheus-alertmanager" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
command -v promtool && command -v amtool
