#!/usr/bin/env bash
# PostgreSQL cluster as a local process, data under .local/pg.
# Usage: postgres.sh install|start|stop|status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

PG_PORT=${PG_PORT:-15432}
PG_USER=clpg   # postgres refuses to run as root; this user owns the cluster when we are root
PGDIR=$LOCAL/pg
DATA=$PGDIR/data
LOG=$LOGS/postgres.log
SOCK=$PGDIR
# A unix socket path is limited to 107 bytes; a deep checkout must use /tmp.
((${#SOCK} < 90)) || SOCK=/tmp

# Settings for a write-heavy single box (docs/PERFORMANCE.md, "PostgreSQL settings"): the scorer
# writes every record it applies. They take effect when the server starts. Only what measured
# no worse is set; the candidates that were not kept, and why, are in that section. Durability
# is not traded for speed: fsync and full_page_writes keep their defaults (on), and
# synchronous_commit is on, named here so that nobody turns it off without reading why not.
SETTINGS=(
  wal_buffers=16MB       # a batch's WAL (about 4 MB for 2,000 records) is not written out mid-transaction
  synchronous_commit=on  # a batch the scorer stored an offset for is on disk before Redis and Kafka hear of it
)

pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_pg() {
  # cd /: the caller's cwd may be unreadable to the cluster user.
  if [[ $(id -u) == 0 ]]; then (cd / && runuser -u "$PG_USER" -- "$@"); else "$@"; fi
}

# The postmaster's command line holds its data dir; pg_ctl status would trust
# any live process that happens to have the pid of a stale postmaster.pid.
running() { pid_alive "$DATA/postmaster.pid" "$DATA"; }

install() {
  [[ -n $(pgbin) && -x $(pgbin)/postgres ]] || apt_install postgresql
  [[ $(id -u) == 0 ]] || return 0
  id -u "$PG_USER" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_USER"
  # The checkout may sit under a directory the cluster user cannot enter
  # (/root is 0700). Rather than moving the data out of the repo, grant
  # traverse-only permission (o+x, no listing or reading) on each ancestor
  # that lacks it.
  local d=$ROOT
  while [[ $d != / ]]; do
    runuser -u "$PG_USER" -- test -x "$d" || chmod o+x "$d"
    d=$(dirname "$d")
  done
}

start() {
  local bin; bin=$(pgbin)
  [[ -x $bin/postgres ]] || die "postgres not installed: run $0 install"
  if [[ $(id -u) == 0 ]]; then id -u "$PG_USER" >/dev/null 2>&1 || die "user $PG_USER missing: run $0 install"; fi
  mkdir -p "$PGDIR" && touch "$LOG"
  if [[ $(id -u) == 0 ]]; then chown "$PG_USER" "$PGDIR" "$LOG"; fi
  if [[ ! -f $DATA/PG_VERSION ]]; then
    echo "=== initdb $(date -Is)" >>"$LOG"
    # Local socket: trust (scripts and psql need no password). TCP: password,
    # like the postgres Docker image, so a missing password shows up locally.
    as_pg "$bin/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >>"$LOG" 2>&1 || die_log "initdb failed" "$LOG"
  fi
  if ! running; then
    # A pid file whose pid lives on in an unrelated process (machine restart)
    # would make postgres refuse to start. A dead pid is left to postgres.
    if pid_alive "$DATA/postmaster.pid"; then rm -f "$DATA/postmaster.pid"; fi
    echo "=== postgres starting $(date -Is)" >>"$LOG"
    port_open "$PG_PORT" && die "port $PG_PORT is taken by another process (set PG_PORT)"
    as_pg "$bin/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $SOCK${SETTINGS[*]/#/ -c }" >/dev/null ||
      die_log "postgres did not start" "$LOG"
  fi
  wait_for 30 "" "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || die_log "pg_isready does not answer" "$LOG"
  local psql=("$bin/psql" -h "$SOCK" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtAc)
  # cl: the admin (a superuser), only for creating databases and roles; tests create and drop
  # a database per run with it. The services never use it.
  [[ $("${psql[@]}" "SELECT 1 FROM pg_roles WHERE rolname = 'cl'") == 1 ]] ||
    "${psql[@]}" "CREATE ROLE cl LOGIN SUPERUSER PASSWORD 'cl'"
  [[ $("${psql[@]}" "SELECT 1 FROM pg_database WHERE datname = 'community_levels'") == 1 ]] ||
    "${psql[@]}" "CREATE DATABASE community_levels"
  # The services' roles (schema owner, scorer, api) with the local passwords the README lists;
  # this also runs against a server that was already up, so an older .local/ gets them too.
  CL_PG_OWNER_PASSWORD=cl_owner CL_PG_SCORER_PASSWORD=cl_scorer CL_PG_API_PASSWORD=cl_api \
    "$bin/psql" -h "$SOCK" -p "$PG_PORT" -U postgres -d community_levels -v ON_ERROR_STOP=1 -qtA \
    -v db=community_levels -f "$ROOT/scripts/local/roles.sql" >/dev/null || die "creating the roles failed"
}

stop() {
  local bin; bin=$(pgbin)
  running || return 0
  as_pg "$bin/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >/dev/null || die_log "postgres did not stop" "$LOG"
}

status() {
  if running; then
    echo "postgres: running (pid $(head -n 1 "$DATA/postmaster.pid"), 127.0.0.1:$(sed -n 4p "$DATA/postmaster.pid"), socket $SOCK, $(cat "$DATA/PG_VERSION"))"
  else
    echo "postgres: not running"; return 1
  fi
}

case ${1:-} in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
