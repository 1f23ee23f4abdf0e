#!/usr/bin/env bash
# One command from a fresh clone to a running aiops: the README's set-up command.
#
#   1. checks that kubectl (with kustomize v5) is on PATH: the tests render deploy/ with it
#      (scripts/kubectl.sh says what to install when it is not);
#   2. creates .venv at the repository root and installs aiops with its development extras
#      and Ray (the sweep tests compare a local Ray run with the process pool; torch pinned
#      to the CPU build 2.13.0 in pyproject.toml);
#   3. installs the real Prometheus server the integration tests start (Debian's package),
#      unless AIOPS_SKIP_PROMETHEUS=1, and headless Chromium for the report's browser test
#      (Debian's package), unless AIOPS_SKIP_CHROMIUM=1;
#   4. runs the main job: the daemon on the embedded simulated cluster for 90 simulated
#      minutes, then `aiops simulate` with every baseline on the bundled workload.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/kubectl.sh check
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev,ray]'
if [ "${AIOPS_SKIP_PROMETHEUS:-0}" != "1" ]; then
  scripts/prometheus.sh install
fi
if [ "${AIOPS_SKIP_CHROMIUM:-0}" != "1" ]; then
  scripts/chromium.sh install
fi
# The daemon's decision log goes to out/sim-run.log; the summary table to the terminal.
mkdir -p out
if ! .venv/bin/aiops run --config examples/sim.yaml --duration 90m --log-format text \
    2>out/sim-run.log; then
  echo "aiops run failed; the end of out/sim-run.log:" >&2
  tail -n 40 out/sim-run.log >&2
  exit 1
fi
.venv/bin/aiops simulate
