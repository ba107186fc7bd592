#!/bin/sh
# Passes RABBITMQ_DEFAULT_USER/PASS to the node as its first user, as the official image does. Like
# there, they take effect when the node starts on an empty data directory.
set -eu

if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
  : "${RABBITMQ_DEFAULT_PASS:?rabbitmq-entrypoint: RABBITMQ_DEFAULT_USER needs RABBITMQ_DEFAULT_PASS}"
  umask 077
  printf 'default_user = %s\ndefault_pass = %s\n' "$RABBITMQ_DEFAULT_USER" "$RABBITMQ_DEFAULT_PASS" \
    >/etc/rabbitmq/conf.d/10-default-user.conf
fi

exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
