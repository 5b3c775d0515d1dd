# shellcheck shell=bash
# Shared helpers for the local-server scripts; sourced, not run.
# Everything lives under <repo>/.local so a checkout is self-contained and
# several clones do not share state (they do share ports: override via env).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
LOCAL=$ROOT/.local
LOGS=$LOCAL/logs
RUN=$LOCAL/run
NAME=$(basename "$0" .sh)
mkdir -p "$LOGS" "$RUN"

die() { echo "$NAME: $*" >&2; exit 1; }

# die_log MESSAGE LOG: show why, then fail. Servers log a lot after the real
# error (shutdown noise), so show the error lines of the latest run (after the
# last "=== " marker) as well as the tail.
die_log() {
  local run
  run=$(awk '/^=== /{run=""} {run=run $0 "\n"} END{printf "%s", run}' "$2" 2>/dev/null) || true
  { echo "--- errors in $2 ---"; grep -m 15 -E 'ERROR|FATAL|Caused by|[Ee]rror:|Exception' <<<"$run" | cut -c1-300
    echo "--- last lines ---"; tail -n 15 <<<"$run" | cut -c1-300; } >&2 || true
  die "$1"
}

usage() { die "usage: $0 ${1:-install|start|stop|status}"; }

# pid_alive PIDFILE [PATTERN]: the process lives (and its command line holds
# PATTERN). The pattern guards against a stale pid file from before a
# machine restart whose pid now belongs to some other process.
pid_alive() {
  local pid
  [[ -s $1 ]] && pid=$(head -n 1 "$1") && kill -0 "$pid" 2>/dev/null &&
    { [[ -z ${2:-} ]] || grep -qaF -- "$2" "/proc/$pid/cmdline" 2>/dev/null; }
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for SECONDS PIDFILE CMD...: poll CMD until it succeeds; give up early
# when the server process has already died (no point waiting out the timeout).
wait_for() {
  local deadline=$((SECONDS + $1)) pidfile=$2; shift 2
  until "$@"; do
    if ((SECONDS >= deadline)); then return 1; fi
    if [[ -n $pidfile ]] && ! pid_alive "$pidfile"; then return 1; fi
    sleep 0.5
  done
}

# stop_pidfile PIDFILE [PATTERN]: TERM, give it time to flush to disk, then KILL.
stop_pidfile() {
  local pidfile=$1 pid
  pid_alive "$pidfile" "${2:-}" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$NAME: pid $pid ignored TERM for 30 s, killing" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# Debian packages for a fresh machine. A policy-rc.d that answers 101 keeps
# the package from starting its own system-wide service (we run our own).
apt_install() {
  [[ $(id -u) == 0 ]] || die "need root to apt-get install $*"
  local policy=/usr/sbin/policy-rc.d added=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  local rc=0 log=$LOGS/apt.log
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; } >"$log" 2>&1 || rc=$?
  [[ -z $added ]] || rm -f "$policy"
  ((rc == 0)) || die_log "apt-get install $* failed" "$log"
}
