#!/usr/bin/env bash
# kubectl with kustomize v5, which the tests use to render deploy/overlays/* exactly as
# `kubectl apply -k` will (tests/test_deploy.py, and the RBAC the fake API server enforces).
#
#   scripts/kubectl.sh check   exit 1 with a message unless kubectl is on PATH and its
#                              kustomize is v5 or newer; print both versions
#
# Nothing is installed: Debian's `kubernetes-client` is kubectl 1.20, whose kustomize (v2)
# renders these overlays differently, and no other registry is reachable from set-up. Machines
# with the Google Cloud CLI have a recent kubectl at /usr/bin/kubectl; elsewhere install
# kubectl 1.27 or newer by hand (https://kubernetes.io/docs/tasks/tools/).
set -euo pipefail

fail() {
  echo "kubectl.sh: $1" >&2
  echo "kubectl.sh: the tests render deploy/overlays/* with \`kubectl kustomize\` (kustomize v5);" \
       "install kubectl 1.27 or newer and put it on PATH (Debian's kubernetes-client, 1.20," \
       "is too old)" >&2
  exit 1
}

case "${1:-check}" in
  check)
    command -v kubectl >/dev/null 2>&1 || fail "kubectl not found on PATH"
    out="$(kubectl version --client 2>&1)" || fail "\`kubectl version --client\` failed: $out"
    kustomize="$(printf '%s\n' "$out" | sed -n 's/^Kustomize Version: v\([0-9][0-9]*\).*/\1/p')"
    [ -n "$kustomize" ] || fail "kubectl does not report a kustomize version: $out"
    [ "$kustomize" -ge 5 ] || fail "kubectl's kustomize is v$kustomize, not v5 or newer"
    printf '%s\n' "$out" | grep -E '^(Client|Kustomize) Version'
    ;;
  *)
    echo "usage: $0 check" >&2
    exit 2
    ;;
esac
