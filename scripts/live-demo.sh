#!/usr/bin/env bash
# The live loop by hand: aiops run (backend: kubernetes, the shipped enforce config) against a
# real Prometheus scraping a simulated vLLM fleet every second, and a loopback Kubernetes API
# server (HTTPS, the shipped RBAC) whose replica count drives that fleet. A line a second shows
# the load, the fleet and aiops' last decision; Ctrl-C stops it (aiops gets SIGTERM and
# releases its Lease). Needs scripts/setup.sh first (the venv, Prometheus, kubectl).
#
#   scripts/live-demo.sh                               # five minutes of a load story
#   scripts/live-demo.sh --kill-prometheus-at 100 --down-for 40
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "live-demo.sh: no .venv; run scripts/setup.sh first" >&2
  exit 1
fi
scripts/prometheus.sh check >/dev/null
scripts/kubectl.sh check >/dev/null
exec .venv/bin/python scripts/live_demo.py "$@"
