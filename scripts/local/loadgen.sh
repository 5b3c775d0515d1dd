#!/usr/bin/env bash
# The load generators `make bench` drives: Debian's wrk (the read API at saturation) and hey
# (the API at a fixed rate, ingest's batches).
# Usage: loadgen.sh install|status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

TOOLS=(wrk hey)

missing() { local t; for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null || echo "$t"; done; }

case ${1:-} in
  install) [[ -z $(missing) ]] || apt_install "${TOOLS[@]}" ;;
  status)
    gone=$(missing | xargs)
    if [[ -z $gone ]]; then echo "load generators: wrk, hey"; else echo "load generators: $gone not installed"; exit 1; fi ;;
  *) usage "install|status" ;;
esac
