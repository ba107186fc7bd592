#!/usr/bin/env bash
# `make run`: the whole system on this machine with demo data. Ctrl-C stops everything.
#
# State (generated keys, the demo tenant, logs) lives in .run/ at the repository root.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
state="$root/.run"
mkdir -p "$state/logs"

deploy/local/ensure-services.sh

echo "Building (debug)..."
cargo build --workspace --bins --quiet
bin="$root/target/debug"

# Dev secrets and passwords, generated once and kept in .run/env.
if [ ! -f "$state/env" ]; then
  umask 077
  cat > "$state/env" <<ENV
FP_APP_PASSWORD=$(openssl rand -hex 16)
FP_DASHBOARD_PASSWORD=$(openssl rand -hex 16)
FP__DASHBOARD__SESSION_KEY=$(openssl rand -hex 32)
ENV
fi
# Added later than the rest: an older .run/env gets it appended, once (a new key would make every
# saved webhook secret unreadable).
if ! grep -q '^FP__SECRETS__MASTER_KEY=' "$state/env"; then
  (umask 077; echo "FP__SECRETS__MASTER_KEY=$(openssl rand -hex 32)" >> "$state/env")
fi
# shellcheck disable=SC1091
. "$state/env"
export FP__DASHBOARD__SESSION_KEY FP__SECRETS__MASTER_KEY
export FP_PROFILE=local FP_CONFIG_DIR="$root/config"
export FP__DATABASE__URL="postgres://fp_app:${FP_APP_PASSWORD}@127.0.0.1:5432/feedbackpulse"
export FP__DATABASE__READONLY_URL="postgres://fp_dashboard:${FP_DASHBOARD_PASSWORD}@127.0.0.1:5432/feedbackpulse"
export FP__DISPATCHER__ALLOW_PRIVATE_CIDRS="127.0.0.0/8"
export FP__DISPATCHER__EXTRA_ROOT_CERTS="$state/receiver-ca.pem"
# Endpoint notifications go to the local mail sink (fp-mail-sink), which writes each to .run/mail/;
# a minute of failures (not the default hour) makes the "failing" email show up while you watch.
mail_listen="127.0.0.1:2525"
export FP__NOTIFICATIONS__ENABLED=true FP__NOTIFICATIONS__SMTP_URL="smtp://$mail_listen"
export FP__NOTIFICATIONS__FAILING_AFTER="${FP__NOTIFICATIONS__FAILING_AFTER:-1m}"
export RUST_LOG="${RUST_LOG:-info}"

admin_url="${FP_ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! "$bin/fpctl" setup-database --admin-url "$admin_url"; then
  cat >&2 <<MSG
Could not create the database and roles as $admin_url.
Set FP_ADMIN_DATABASE_URL to a PostgreSQL superuser connection (with its password), e.g.
  FP_ADMIN_DATABASE_URL=postgres://postgres:SECRET@127.0.0.1:5432/postgres make run
MSG
  exit 1
fi
"$bin/fpctl" migrate

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "Stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "Stopped."
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

start() { # name command...
  local name=$1; shift
  "$@" >"$state/logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_http() { # url what
  for _ in $(seq 1 60); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.5
  done
  echo "$2 did not start; see $state/logs/" >&2
  exit 1
}

# The demo tenant's webhook secret: the receiver verifies both signature headers with it.
demo_secret="demo_shared_secret"
FP_DEMO_SECRET="$demo_secret" start demo-receiver "$bin/fp-demo-receiver" --listen 127.0.0.1:8443 \
  --ca-pem "$state/receiver-ca.pem"
for _ in $(seq 1 40); do [ -s "$state/receiver-ca.pem" ] && break; sleep 0.25; done
start mail-sink "$bin/fp-mail-sink" --listen "$mail_listen" --dir "$state/mail"
start api "$bin/fp-api"
start dispatcher "$bin/fp-dispatcher"
start log-ingest "$bin/fp-log-ingest"
start dashboard "$bin/fp-dashboard"
wait_http http://127.0.0.1:8080/api/v2/webhooks/config "fp-api"
wait_http http://127.0.0.1:8082/readyz "fp-dispatcher"
wait_http http://127.0.0.1:8083/readyz "fp-log-ingest"
wait_http http://127.0.0.1:8085/healthz "fp-dashboard"

# The demo tenant: reused while its key still works, created otherwise.
demo_email="demo@feedbackpulse.test"
demo_password="demo-password"
api_key=""
if [ -f "$state/demo.json" ]; then
  api_key=$(jq -r .api_key "$state/demo.json")
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $api_key" http://127.0.0.1:8080/api/v2/webhooks/config)
  [ "$status" = 401 ] && api_key=""
fi
if [ -z "$api_key" ]; then
  "$bin/fpctl" tenant create "Demo GmbH" > "$state/demo.json"
  api_key=$(jq -r .api_key "$state/demo.json")
  FP_USER_PASSWORD="$demo_password" "$bin/fpctl" user create --email "$demo_email" \
    --tenant "$(jq -r .tenant_id "$state/demo.json")" >/dev/null 2>&1 \
    || echo "note: user $demo_email exists already (from an earlier demo tenant); its password is unchanged"
fi
# The platform superadmin, for the admin viewer; created once.
admin_email="admin@feedbackpulse.test"
admin_password="admin-password"
FP_USER_PASSWORD="$admin_password" "$bin/fpctl" user create --email "$admin_email" --superadmin \
  >/dev/null 2>&1 || true
curl -sf -X PUT http://127.0.0.1:8080/api/v2/webhooks/config \
  -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' \
  -d '{"url": "https://127.0.0.1:8443/webhooks/feedbackpulse", "events": ["submission.created", "submission.status_changed"], "secret": "'"$demo_secret"'"}' >/dev/null

cat <<INFO

FeedbackPulse Webhooks is running.
  Dashboard:  http://127.0.0.1:8081/   (log in as $demo_email / $demo_password)
              Settings > Integrations: http://127.0.0.1:8081/settings/integrations
  Admin:      http://127.0.0.1:8081/admin/webhook-logs   (log in as $admin_email / $admin_password)
  API:        http://127.0.0.1:8080/api/v2
  API key:    $api_key
  Receiver:   https://127.0.0.1:8443/webhooks/feedbackpulse   (deliveries print in $state/logs/demo-receiver.log,
              each with VALID or INVALID for both signature headers; the secret is $demo_secret)
  Logs:       $state/logs/
  Mail:       $state/mail/   (the emails the demo tenant's admin $demo_email gets when its endpoint
              has failed every delivery for $FP__NOTIFICATIONS__FAILING_AFTER, and when it is disabled; one .eml file each)

Create a submission (it is delivered to the demo receiver and shows in the dashboard):
  curl -X POST http://127.0.0.1:8080/api/v2/submissions \\
    -H 'Authorization: Bearer $api_key' -H 'Content-Type: application/json' \\
    -d '{"campaign_id": 1, "star_rating": 5, "text_feedback": "Love this product!", "customer_name": "Jane Doe"}'

To watch retries: make the receiver answer 500, create a submission, then make it answer 200 again:
  curl --cacert $state/receiver-ca.pem -X POST https://127.0.0.1:8443/_demo/respond/500
  curl --cacert $state/receiver-ca.pem -X POST https://127.0.0.1:8443/_demo/respond/200
Keep it at 500 and create submissions for $FP__NOTIFICATIONS__FAILING_AFTER: the "failing" email lands in $state/mail/.

Press Ctrl-C to stop.
INFO

wait -n "${pids[@]}" || true
echo "A service exited; see $state/logs/" >&2
exit 1
