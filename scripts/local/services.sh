#!/usr/bin/env bash
# The services (ingest, scorer, api) and the webhook dispatcher as background processes, for `make run`.
# Usage: services.sh start|stop|status|check
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
SERVICES=(scorer ingest api webhooks)
PY=$ROOT/.venv/bin/python

# Each service connects to PostgreSQL as its own role (README "Database roles"): the scorer
# reads and writes rows, the api only reads, ingest needs no database; the webhook dispatcher
# writes its own tables as the scorer's role. Local passwords are fixed.
PG_PORT=${PG_PORT:-15432}
database_url() {
  case $1 in
    scorer | webhooks) echo "${CL_SCORER_DATABASE_URL:-postgresql+asyncpg://cl_scorer:cl_scorer@localhost:$PG_PORT/community_levels}" ;;
    api) echo "${CL_API_DATABASE_URL:-postgresql+asyncpg://cl_api:cl_api@localhost:$PG_PORT/community_levels}" ;;
  esac
}

health_url() {
  case $1 in
    ingest) echo "http://127.0.0.1:${CL_INGEST_PORT:-8001}/readyz" ;;
    api) echo "http://127.0.0.1:${CL_API_PORT:-8002}/healthz" ;;
    scorer) echo "http://127.0.0.1:${CL_SCORER_PORT:-8003}/readyz" ;;
    webhooks) echo "http://127.0.0.1:${CL_WEBHOOKS_PORT:-8004}/readyz" ;;
  esac
}

case ${1:-} in
  start)
    for s in "${SERVICES[@]}"; do
      pidfile=$RUN/$s.pid
      pid_alive "$pidfile" && continue
      url=$(database_url "$s")
      (cd "$ROOT" && exec env ${url:+CL_DATABASE_URL="$url"} nohup "$PY" -m "services.$s" >>"$LOGS/$s.log" 2>&1 </dev/null) &
      echo $! >"$pidfile"
    done
    for s in "${SERVICES[@]}"; do
      wait_for 60 "$RUN/$s.pid" curl -fs -o /dev/null "$(health_url "$s")" ||
        die_log "$s did not become healthy" "$LOGS/$s.log"
    done ;;
  stop)
    for s in "${SERVICES[@]}"; do stop_pidfile "$RUN/$s.pid"; done ;;
  status)
    for s in "${SERVICES[@]}"; do
      if pid_alive "$RUN/$s.pid"; then echo "$s: running (pid $(cat "$RUN/$s.pid")), $(health_url "$s")"
      else echo "$s: not running"; fi
    done ;;
  check)
    # Every service still runs and answers its health check (within 120 s: the short fault
    # tests stall the servers the services share, and the services recover from that).
    for s in "${SERVICES[@]}"; do
      pid_alive "$RUN/$s.pid" || die_log "$s is not running" "$LOGS/$s.log"
      wait_for 120 "$RUN/$s.pid" curl -fs -o /dev/null "$(health_url "$s")" ||
        die_log "$s does not answer $(health_url "$s")" "$LOGS/$s.log"
      echo "$s: answers $(health_url "$s")"
    done ;;
  *) usage "start|stop|status|check" ;;
esac
