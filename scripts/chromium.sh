#!/usr/bin/env bash
# Headless Chromium for the report's browser test (tests/test_report.py renders the HTML
# report and looks at the screenshot).
#
#   scripts/chromium.sh install   install Debian's `chromium` package if chromium is missing,
#                                 then print its version
#   scripts/chromium.sh check     exit 1 (with a message) if chromium is missing
#   scripts/chromium.sh version   print its version
#
# Why Debian's package: it installs from the distribution's registry with no download of its
# own (test tools that fetch their own browser build cannot work where only package
# registries are reachable), and it is the browser a Debian user opens the report with.
set -euo pipefail
here="$(dirname "$0")"
# shellcheck source=scripts/apt.sh
. "$here/apt.sh"

have() { command -v chromium >/dev/null 2>&1; }

version() { chromium --version 2>/dev/null | head -n 1; }

case "${1:-install}" in
  install)
    if ! have; then
      apt_install chromium.sh chromium
    fi
    version
    ;;
  check)
    if ! have; then
      echo "chromium.sh: chromium not found; run: scripts/chromium.sh install" >&2
      exit 1
    fi
    version
    ;;
  version)
    version
    ;;
  *)
    echo "usage: $0 [install|check|version]" >&2
    exit 2
    ;;
esac
