#!/usr/bin/env bash
# The real Prometheus server and promtool for the integration tests (tests/integration/).
#
#   scripts/prometheus.sh install   install Debian's `prometheus` package if prometheus or
#                                   promtool is missing, then print both versions
#   scripts/prometheus.sh check     exit 1 (with a message) if either binary is missing
#   scripts/prometheus.sh version   print both versions
#
# Why Debian's package: it is the server operators run, brings promtool (which backfills the
# test data with `promtool tsdb create-blocks-from openmetrics`), and installs from the
# distribution's registry with no download of our own. --no-install-recommends keeps out
# node-exporter and friends. The tests never use the packaged service (on hosts with systemd
# it listens on :9090); each test session starts its own server on a free loopback port.
set -euo pipefail
# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/apt.sh"

have() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

versions() {
  prometheus --version 2>&1 | head -n 1
  promtool --version 2>&1 | head -n 1
}

case "${1:-install}" in
  install)
    if ! have; then
      apt_install prometheus.sh prometheus
    fi
    versions
    ;;
  check)
    if ! have; then
      echo "prometheus.sh: prometheus/promtool not found; run: scripts/prometheus.sh install" >&2
      exit 1
    fi
    versions
    ;;
  version)
    versions
    ;;
  *)
    echo "usage: $0 [install|check|version]" >&2
    exit 2
    ;;
esac
