#!/usr/bin/env bash
# Single-node KRaft Kafka (combined broker+controller) as a plain JVM process.
# No Docker and no download site here, so the broker jars come from Maven
# Central via mvn.  Usage: kafka.sh install|start|stop|status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
# A second listener that requires SASL/PLAIN, so that the services' SASL settings are tested
# for real (tests/integration/test_kafka_security.py). Its one user and password are local.
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-19094}
KAFKA_SASL_USER=${KAFKA_SASL_USER:-cl}
KAFKA_SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-cl-local-sasl}
KDIR=$LOCAL/kafka
LIBS=$KDIR/libs
DATA=$KDIR/data
PIDFILE=$RUN/kafka.pid
LOG=$LOGS/kafka.log

# fetch_libs [group:artifact:version...]: the broker plus extra artifacts,
# with their runtime dependencies, into $LIBS.
fetch_libs() {
  local deps="" d g a v mvnlog=$LOGS/kafka-install.log
  for d in "org.apache.kafka:kafka_2.13:$KAFKA_VERSION" "$@"; do
    IFS=: read -r g a v <<<"$d"
    deps+="<dependency><groupId>$g</groupId><artifactId>$a</artifactId><version>$v</version></dependency>"
  done
  cat >"$KDIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>kafka-libs</artifactId><version>1</version>
  <dependencies>$deps</dependencies>
</project>
EOF
  mvn -B -q -Dstyle.color=never -f "$KDIR/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$LIBS.new" >"$mvnlog" 2>&1 || die_log "mvn could not fetch kafka_2.13:$KAFKA_VERSION $*" "$mvnlog"
}

install() {
  [[ -f $LIBS/.installed-$KAFKA_VERSION ]] && return 0
  pid_alive "$PIDFILE" kafka.Kafka && die "kafka is running from the current jars: stop it before installing $KAFKA_VERSION"
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  # Fetch into a staging dir so a failed or interrupted install (bad
  # KAFKA_VERSION, network) leaves the previous working install in place.
  rm -rf "$LIBS.new" && mkdir -p "$LIBS.new"
  fetch_libs
  # The slf4j->log4j2 binding is not a dependency of the broker artifact (the
  # release tarball adds it; 4.0.x lacks even log4j-core) and without it the
  # broker logs nothing. Match the log4j version the broker already pulls in.
  local log4j binding="log4j-slf4j-impl"
  log4j=$(ls "$LIBS.new" | sed -n 's/^log4j-api-\(.*\)\.jar$/\1/p')
  log4j=${log4j:-2.24.3}
  if compgen -G "$LIBS.new/slf4j-api-2.*" >/dev/null; then binding="log4j-slf4j2-impl"; fi
  fetch_libs "org.apache.logging.log4j:log4j-core:$log4j" "org.apache.logging.log4j:$binding:$log4j"
  touch "$LIBS.new/.installed-$KAFKA_VERSION"
  rm -rf "$LIBS" && mv "$LIBS.new" "$LIBS"
}

write_config() {
  cat >"$KDIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://localhost:$KAFKA_PORT,CONTROLLER://localhost:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://localhost:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://localhost:$KAFKA_PORT,SASL_PLAINTEXT://localhost:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER="$KAFKA_SASL_PASSWORD";
log.dirs=$DATA
num.partitions=6
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  cat >"$KDIR/log4j2.properties" <<'EOF'
rootLogger.level=INFO
rootLogger.appenderRef.out.ref=out
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
logger.state.name=state.change.logger
logger.state.level=WARN
logger.request.name=kafka.request.logger
logger.request.level=WARN
EOF
}

start() {
  [[ -f $LIBS/.installed-$KAFKA_VERSION ]] || die "kafka $KAFKA_VERSION not installed: run $0 install"
  if pid_alive "$PIDFILE" kafka.Kafka; then
    # KRaft cannot add a listener to a running broker; one started by an older kafka.sh lacks it.
    port_open "$KAFKA_SASL_PORT" ||
      echo "$NAME: the running kafka has no SASL listener on $KAFKA_SASL_PORT; restart it: $0 stop && $0 start" >&2
    return 0
  fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process (set KAFKA_PORT)"
  mkdir -p "$DATA"
  write_config
  local cp="$LIBS/*" jvm=(java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$KDIR/log4j2.properties")
  # Static quorum (controller.quorum.voters) formats the same way on every 4.x,
  # unlike the dynamic --standalone mode. Format only once: it is the data.
  if [[ ! -f $DATA/meta.properties ]]; then
    # A cluster id is 16 random bytes in url-safe base64, as random-uuid makes; one in 64
    # starts with "-", so it is passed as --cluster-id=ID, never as an argument of its own.
    local id
    id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format --cluster-id="$id" -c "$KDIR/server.properties" >>"$LOG" 2>&1 ||
      die_log "formatting $DATA failed" "$LOG"
  fi
  rm -f "$PIDFILE"
  echo "=== kafka $KAFKA_VERSION starting $(date -Is)" >>"$LOG"
  # setsid: detach from the caller's process group so a Ctrl-C or job-kill
  # in the calling shell does not take the broker down with it.
  setsid bash -c 'echo $$ >"$1"; shift; exec nohup "$@"' _ "$PIDFILE" \
    "${jvm[@]}" -cp "$cp" kafka.Kafka "$KDIR/server.properties" </dev/null >>"$LOG" 2>&1 &
  wait_for 5 "" test -s "$PIDFILE" || die "kafka did not write its pid file"
  if ! wait_for 90 "$PIDFILE" port_open "$KAFKA_PORT"; then
    pid_alive "$PIDFILE" kafka.Kafka || { rm -f "$PIDFILE"; die_log "kafka exited during startup" "$LOG"; }
    stop_pidfile "$PIDFILE" kafka.Kafka
    die_log "kafka did not open port $KAFKA_PORT within 90 s; stopped it" "$LOG"
  fi
}

status() {
  if pid_alive "$PIDFILE" kafka.Kafka; then
    echo "kafka: running (pid $(cat "$PIDFILE"), $(sed -n "s|^listeners=||p" "$KDIR/server.properties"), version $(cd "$LIBS" && echo .installed-* | sed 's/^\.installed-//'))"
  else
    echo "kafka: not running"; return 1
  fi
}

case ${1:-} in
  install) install ;;
  start) start ;;
  stop) stop_pidfile "$PIDFILE" kafka.Kafka ;;
  status) status ;;
  *) usage ;;
esac
