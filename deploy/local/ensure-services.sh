#!/usr/bin/env bash
# Makes PostgreSQL and RabbitMQ answer on 127.0.0.1, from a bare Debian or Ubuntu machine:
# installs what is missing with apt-get, configures how the project's roles log in over loopback,
# starts what is down and waits until each answers. Idempotent; says every step it takes.
# `make run`, `make test`, `make bench` and `.ci/run` call it.
#
# Without root (or password-less sudo) it installs and starts nothing and prints the one command to
# run; the PostgreSQL setting below needs only the superuser's login.
# `--check` only reports what is down.
#
# What it changes on the machine, and only when needed:
# - apt packages: postgresql, rabbitmq-server, curl, jq, openssl (used by `make run`) and python3 with
#   venv (the OpenAPI test's schemathesis);
# - PostgreSQL: starts Debian's cluster (creating it if the package left none) and, when the
#   superuser cannot log in over loopback without a password (Debian's default asks for one), adds
#   one marked block to its pg_hba.conf that trusts loopback logins of the roles the project uses
#   (postgres, fp_app, fp_dashboard). Set FP_ADMIN_DATABASE_URL to leave authentication alone.
#   It sets `backend_flush_after = 256kB` (ALTER SYSTEM, then a reload), as docker-compose.yml and
#   the Kubernetes overlays do; with FP_ADMIN_DATABASE_URL set it only says when the server lacks it.
# - RabbitMQ: starts the default node (guest/guest on 127.0.0.1:5672). A wedged node (listening but
#   not answering AMQP) is stopped by its node name or its pid file, never by killing every Erlang VM.
#   It gives the node half the host's CPUs as Erlang schedulers (at least one), not bound to CPUs:
#   one marked block in /etc/rabbitmq/rabbitmq-env.conf, and when it writes the block, a restart
#   of a node that runs with other schedulers (by systemd where systemd runs it).
set -euo pipefail

check_only=false
[ "${1:-}" = "--check" ] && check_only=true

say() { echo "ensure-services: $*"; }
fail() { echo "ensure-services: $*" >&2; exit 1; }

PG_ROLES="postgres,fp_app,fp_dashboard"
HBA_BEGIN="# BEGIN feedbackpulse loopback logins (deploy/local/ensure-services.sh)"
HBA_END="# END feedbackpulse loopback logins"
ADMIN_URL="${FP_ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A listening RabbitMQ can still be wedged (seen once: connections accepted, never answered).
# A healthy broker answers the AMQP 0-9-1 protocol header with a Connection.Start frame (type 1).
amqp_answers() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672; printf "AMQP\x00\x00\x09\x01" >&3; head -c 1 <&3 | od -An -tx1' \
    2>/dev/null | grep -q 01
}

wait_until() { # seconds description command...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq 1 "$seconds"); do "$@" && return 0; sleep 1; done
  fail "$what did not come up within ${seconds} s"
}

admin_login_works() { psql -w -X -q -At "$ADMIN_URL" -c 'SELECT 1' >/dev/null 2>&1; }

if $check_only; then
  down=0
  port_open 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; down=1; }
  amqp_answers || { echo "RabbitMQ does not answer on 127.0.0.1:5672" >&2; down=1; }
  [ "$down" = 0 ] || echo "run: sudo deploy/local/ensure-services.sh" >&2
  exit "$down"
fi

# Everything below may need root: decide once how to get it.
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  as_root=(false)
fi
need_root() { # what
  if [ "${as_root[0]:-}" = false ]; then
    cat >&2 <<MSG
ensure-services: $1 needs root. Run, once:
  sudo $(cd "$(dirname "$0")" && pwd)/ensure-services.sh
MSG
    exit 1
  fi
}

# --- packages -----------------------------------------------------------------------------------
missing=()
command -v pg_ctlcluster >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
for tool in curl jq openssl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
# The OpenAPI test installs schemathesis into a venv (deploy/local/ensure-schemathesis.sh).
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  need_root "installing ${missing[*]}"
  command -v apt-get >/dev/null || fail "apt-get is not available; install ${missing[*]} by hand"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine or container has no package lists: apt then knows no candidate.
  if ! apt-cache policy "${missing[@]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    say "apt-get update"
    "${as_root[@]}" apt-get update -q
  fi
  say "installing ${missing[*]}"
  if ! "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    # Stale lists name files the mirror no longer has: refresh once and try again.
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

# --- PostgreSQL ---------------------------------------------------------------------------------
# Debian's cluster: the newest installed version, cluster `main`.
pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! port_open 5432; then
  need_root "starting PostgreSQL"
  if [ ! -d "/etc/postgresql/$pg_version/main" ]; then
    say "creating PostgreSQL $pg_version cluster main"
    "${as_root[@]}" pg_createcluster "$pg_version" main
  fi
  say "starting PostgreSQL $pg_version cluster main"
  "${as_root[@]}" pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
  wait_until 60 "PostgreSQL on 127.0.0.1:5432" pg_isready -q -h 127.0.0.1 -p 5432
fi
pg_isready -q -h 127.0.0.1 -p 5432 || wait_until 60 "PostgreSQL on 127.0.0.1:5432" pg_isready -q -h 127.0.0.1 -p 5432

if ! admin_login_works; then
  hba="/etc/postgresql/$pg_version/main/pg_hba.conf"
  if [ -n "${FP_ADMIN_DATABASE_URL:-}" ] || [ ! -f "$hba" ]; then
    fail "cannot log in to PostgreSQL as $ADMIN_URL; set FP_ADMIN_DATABASE_URL to a superuser connection that works"
  fi
  need_root "letting the project's roles log in over loopback"
  if ! grep -qF "$HBA_BEGIN" "$hba"; then
    # pg_hba.conf is read top-down and the first matching line wins: the block goes first.
    say "trusting loopback logins of $PG_ROLES in $hba"
    block=$(printf '%s\nhost all %s 127.0.0.1/32 trust\nhost all %s ::1/128 trust\n%s\n' \
      "$HBA_BEGIN" "$PG_ROLES" "$PG_ROLES" "$HBA_END")
    { echo "$block"; "${as_root[@]}" cat "$hba"; } | "${as_root[@]}" tee "$hba.fp-new" >/dev/null
    "${as_root[@]}" chown --reference="$hba" "$hba.fp-new"
    "${as_root[@]}" chmod --reference="$hba" "$hba.fp-new"
    "${as_root[@]}" mv "$hba.fp-new" "$hba"
  fi
  "${as_root[@]}" pg_ctlcluster --skip-systemctl-redirect "$pg_version" main reload
  wait_until 10 "a loopback login as postgres" admin_login_works
fi
say "PostgreSQL $pg_version answers on 127.0.0.1:5432"

# Backends hand what they write to the disk every 256 kB rather than leaving it to the kernel's
# writeback, whose bursts stalled the flushes of the commits in flight (deploy/README.md,
# "Storage"). The bench's figures assume it. It needs the superuser's login, not root.
FLUSH_AFTER=256kB
flush_after=$(psql -w -X -q -At "$ADMIN_URL" -c 'SHOW backend_flush_after')
if [ "$flush_after" != "$FLUSH_AFTER" ]; then
  if [ -n "${FP_ADMIN_DATABASE_URL:-}" ]; then
    say "note: this server's backend_flush_after is $flush_after;" \
      "the project's deployments set $FLUSH_AFTER"
  else
    say "setting PostgreSQL's backend_flush_after to $FLUSH_AFTER (was $flush_after)"
    psql -w -X -q -At -v ON_ERROR_STOP=1 "$ADMIN_URL" \
      -c "ALTER SYSTEM SET backend_flush_after = '$FLUSH_AFTER'" -c 'SELECT pg_reload_conf()' >/dev/null
  fi
fi

# --- RabbitMQ -----------------------------------------------------------------------------------
node="rabbit@$(hostname -s)"
stop_node() { # why
  say "$1: stopping node $node"
  if ! timeout 30 "${as_root[@]}" rabbitmqctl -n "$node" stop >/dev/null 2>&1; then
    pid_file="/var/lib/rabbitmq/mnesia/$node.pid"
    if [ -f "$pid_file" ]; then
      say "node $node did not stop: killing its VM (pid $(cat "$pid_file"))"
      "${as_root[@]}" kill -9 "$(cat "$pid_file")" || true
    fi
  fi
  wait_until 30 "the old RabbitMQ to let go of port 5672" bash -c '! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null'
}
if port_open 5672 && ! amqp_answers; then
  need_root "restarting RabbitMQ"
  stop_node "RabbitMQ accepts connections but does not answer"
fi

# The broker shares this host with PostgreSQL, the services and their load. On a 2-CPU host, one
# scheduler instead of Erlang's default (one per CPU, each bound to its CPU) took 15-26 % less of
# RabbitMQ's CPU per message at the bench's max rate and 7-8 % less at 2,900/s (medians of the
# sittings with one unbound scheduler: bench/README.md, "RabbitMQ's schedulers on a shared host").
# rabbitmq-env reads the block at every start of the node; the block keeps any Erlang arguments
# set before it and adds `+S` after them.
schedulers=$(( $(nproc) / 2 ))
[ "$schedulers" -ge 1 ] || schedulers=1
RABBITMQ_ENV=/etc/rabbitmq/rabbitmq-env.conf
ENV_BEGIN="# BEGIN feedbackpulse schedulers (deploy/local/ensure-services.sh)"
ENV_END="# END feedbackpulse schedulers"
bind_line="SCHEDULER_BIND_TYPE=u"
args_line="SERVER_ADDITIONAL_ERL_ARGS=\"\$SERVER_ADDITIONAL_ERL_ARGS +S $schedulers:$schedulers\""
# Reading the file is done as root where root is at hand; only writing it needs root.
reader=("${as_root[@]}")
[ "${as_root[0]:-}" != false ] || reader=()
env_set() { "${reader[@]}" grep -qxF -- "$1" "$RABBITMQ_ENV" 2>/dev/null; }
block_written=false
if env_set "$bind_line" && env_set "$args_line"; then
  :
elif [ "${as_root[0]:-}" = false ]; then
  say "note: RabbitMQ's schedulers block in $RABBITMQ_ENV is missing or out of date; writing it needs root (deploy/README.md)"
elif ! "${as_root[@]}" test -d "${RABBITMQ_ENV%/*}"; then
  say "note: no ${RABBITMQ_ENV%/*}: RabbitMQ keeps its own schedulers (deploy/README.md)"
else
  say "giving RabbitMQ $schedulers unbound scheduler(s) in $RABBITMQ_ENV"
  # Everything else in the file stays; an earlier block of ours is replaced.
  { if "${as_root[@]}" test -f "$RABBITMQ_ENV"; then
      "${as_root[@]}" awk -v begin="$ENV_BEGIN" -v end="$ENV_END" \
        '$0 == begin { skip = 1 } !skip { print } $0 == end { skip = 0 }' "$RABBITMQ_ENV"
    fi
    printf '%s\n%s\n%s\n%s\n' "$ENV_BEGIN" "$bind_line" "$args_line" "$ENV_END"
  } | "${as_root[@]}" tee "$RABBITMQ_ENV.fp-new" >/dev/null
  if "${as_root[@]}" test -f "$RABBITMQ_ENV"; then
    "${as_root[@]}" chown --reference="$RABBITMQ_ENV" "$RABBITMQ_ENV.fp-new"
    "${as_root[@]}" chmod --reference="$RABBITMQ_ENV" "$RABBITMQ_ENV.fp-new"
  fi
  "${as_root[@]}" mv "$RABBITMQ_ENV.fp-new" "$RABBITMQ_ENV"
  block_written=true
fi
if amqp_answers && [ "${as_root[0]:-}" != false ]; then
  running=$(timeout 30 "${as_root[@]}" rabbitmqctl -n "$node" eval \
    '{erlang:system_info(schedulers_online), erlang:system_info(scheduler_bind_type)}.' 2>/dev/null || true)
  if [ -n "$running" ] && [ "$running" != "{$schedulers,unbound}" ]; then
    if ! $block_written; then
      # Restarted when the block is written (a block of an earlier form is rewritten, and counts):
      # a node that still differs is set otherwise on purpose (RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS
      # in its environment, say), and is left alone.
      say "note: RabbitMQ runs with schedulers $running, not {$schedulers,unbound}; restart it to apply $RABBITMQ_ENV"
    elif command -v systemctl >/dev/null && systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
      say "RabbitMQ runs with schedulers $running: restarting the rabbitmq-server service"
      "${as_root[@]}" systemctl restart rabbitmq-server
      wait_until 120 "RabbitMQ on 127.0.0.1:5672" amqp_answers
    else
      stop_node "RabbitMQ runs with schedulers $running, not {$schedulers,unbound}"
    fi
  fi
fi
if ! port_open 5672; then
  need_root "starting RabbitMQ"
  say "starting RabbitMQ node $node"
  "${as_root[@]}" rabbitmq-server -detached
  wait_until 120 "RabbitMQ on 127.0.0.1:5672" amqp_answers
  timeout 60 "${as_root[@]}" rabbitmqctl -n "$node" await_startup >/dev/null 2>&1 || true
fi
wait_until 60 "RabbitMQ on 127.0.0.1:5672" amqp_answers
say "RabbitMQ answers on 127.0.0.1:5672"
