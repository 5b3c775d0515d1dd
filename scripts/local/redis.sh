#!/usr/bin/env bash
# redis-server as a local daemon, data under .local/redis.
# Usage: redis.sh install|start|stop|status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

REDIS_PORT=${REDIS_PORT:-16379}
DATA=$LOCAL/redis
PIDFILE=$RUN/redis.pid
LOG=$LOGS/redis.log

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

install() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server
}

start() {
  command -v redis-server >/dev/null || die "redis-server not installed: run $0 install"
  pid_alive "$PIDFILE" redis-server && return 0
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process (set REDIS_PORT)"
  mkdir -p "$DATA" && rm -f "$PIDFILE"
  echo "=== redis starting $(date -Is)" >>"$LOG"
  # No config file on purpose: the built-in defaults include RDB snapshots,
  # and redis saves on TERM, so data survives stop/start.
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DATA" \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$LOG" >>"$LOG" 2>&1 || die_log "redis-server failed" "$LOG"
  wait_for 30 "" redis_ping || die_log "redis on port $REDIS_PORT does not answer PING" "$LOG"
}

status() {
  if pid_alive "$PIDFILE" redis-server; then
    echo "redis: running (pid $(cat "$PIDFILE"), 127.0.0.1:$REDIS_PORT)"
  else
    echo "redis: not running"; return 1
  fi
}

case ${1:-} in
  install) install ;;
  start) start ;;
  stop) stop_pidfile "$PIDFILE" redis-server ;;
  status) status ;;
  *) usage ;;
esac
