#!/bin/sh
# Makes the cluster on first start (an empty $PGDATA), as the official image does, then runs the
# server in the foreground on every address with password (scram-sha-256) logins.
set -eu

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres-entrypoint: set POSTGRES_PASSWORD (the superuser's password) for the first start" >&2
    exit 1
  fi
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
  initdb --username=postgres --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$password_file"
  # initdb's pg_hba.conf admits loopback only; containers of the compose network connect too.
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "postgres-entrypoint: initialised $PGDATA"
fi

exec postgres -c listen_addresses='*' "$@"
