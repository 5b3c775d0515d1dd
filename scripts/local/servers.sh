#!/usr/bin/env bash
# Kafka, PostgreSQL and Redis for development and CI, as local processes.
# Usage: servers.sh up|down|status
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SERVERS=(postgres redis kafka)

case ${1:-} in
  up)
    for s in "${SERVERS[@]}"; do "$HERE/$s.sh" install; done
    for s in "${SERVERS[@]}"; do "$HERE/$s.sh" start; done ;;
  down)
    # Stop all even if one fails; report failure at the end.
    rc=0
    for s in "${SERVERS[@]}"; do "$HERE/$s.sh" stop || rc=1; done
    exit $rc ;;
  status)
    rc=0
    for s in "${SERVERS[@]}"; do "$HERE/$s.sh" status || rc=1; done
    exit $rc ;;
  *) echo "usage: $0 up|down|status" >&2; exit 1 ;;
esac
