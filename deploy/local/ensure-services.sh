#!/usr/bin/env bash
# Checks that PostgreSQL and RabbitMQ answer on 127.0.0.1. With --start, starts a local one that is
# down (as this project's CI machines need); without it, says which is down and how to start it.
set -euo pipefail

start=false
[ "${1:-}" = "--start" ] && start=true

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A listening RabbitMQ can still be wedged (seen here once: connections accepted, never answered).
# A healthy broker answers the AMQP 0-9-1 protocol header with a Connection.Start frame (type 1).
amqp_answers() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672; printf "AMQP\x00\x00\x09\x01" >&3; head -c 1 <&3 | od -An -tx1' \
    2>/dev/null | grep -q 01
}

wait_for_port() { # port seconds
  for _ in $(seq 1 "$2"); do port_open "$1" && return 0; sleep 1; done
  return 1
}

missing=0

if ! port_open 5432; then
  if $start && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "PostgreSQL is down: starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    wait_for_port 5432 30 || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
  else
    missing=1
    cat >&2 <<'MSG'
PostgreSQL is not reachable on 127.0.0.1:5432.
  start it:   sudo pg_ctlcluster $(ls /etc/postgresql) main start   (or: sudo systemctl start postgresql)
  install it: sudo apt-get install postgresql
MSG
  fi
fi

if $start && port_open 5672 && ! amqp_answers && command -v rabbitmq-server >/dev/null; then
  echo "RabbitMQ accepts connections but does not answer: restarting it"
  pkill -9 -f beam.smp || true
  sleep 1
fi

if ! port_open 5672; then
  if $start && command -v rabbitmq-server >/dev/null; then
    echo "RabbitMQ is down: starting it"
    rabbitmq-server -detached
    wait_for_port 5672 90 || { echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }
    timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
  else
    missing=1
    cat >&2 <<'MSG'
RabbitMQ is not reachable on 127.0.0.1:5672.
  start it:   sudo rabbitmq-server -detached   (or: sudo systemctl start rabbitmq-server)
  install it: sudo apt-get install rabbitmq-server
MSG
  fi
fi

exit "$missing"
