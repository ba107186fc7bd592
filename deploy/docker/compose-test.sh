#!/usr/bin/env bash
# The compose stack end to end, on the local stand-in images: builds them (deploy/docker/local-images.sh),
# starts docker-compose.yml with the demo profile under a project name of its own, waits for every
# health check, sends a submission through the api's published port and sees it at the demo receiver
# and in GET /api/v2/webhooks/logs, scales to three dispatchers and sees each of them deliver, sees
# Prometheus scrape all of them, and takes everything down again (containers, volumes, network), also when a check fails.
#
# Needs: docker with docker-compose, curl, jq, python3, and the debug binaries
# (`cargo build --workspace --bins`). `make test` runs it last.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
started=$SECONDS
say() { printf '[compose-test %3d s] %s\n' "$((SECONDS - started))" "$*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}

for tool in docker docker-compose curl jq python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done

project="fpcompose$(date +%s)$$"
work=$(mktemp -d)
env_file="$work/env"

# A /24 for the pinned demo network that overlaps no docker network on this machine.
mapfile -t networks < <(docker network ls -q)
demo_subnet=$(docker network inspect --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "${networks[@]}" |
  python3 -c '
import ipaddress, random, sys
taken = [ipaddress.ip_network(s) for s in sys.stdin.read().split() if ":" not in s]
free = [n for n in (ipaddress.ip_network(f"172.30.{i}.0/24") for i in range(256))
        if not any(n.overlaps(t) for t in taken)]
print(random.choice(free))')

umask 077
for key in POSTGRES_PASSWORD FP_APP_DATABASE_PASSWORD FP_DASHBOARD_DATABASE_PASSWORD RABBITMQ_PASSWORD \
  FP__SECRETS__MASTER_KEY FP__DASHBOARD__SESSION_KEY; do
  echo "$key=$(openssl rand -hex 32)"
done >"$env_file"
# Port 0: docker picks free host ports, so runs never collide with each other or with `make run`.
cat >>"$env_file" <<ENV
FP_API_PORT=0
FP_DASHBOARD_PORT=0
FP_RABBITMQ_UI_PORT=0
FP_PROMETHEUS_PORT=0
# No Jaeger in this run (no local stand-in): export no traces.
OTEL_EXPORTER_OTLP_ENDPOINT=
FP_DEMO_SUBNET=$demo_subnet
FP_DISPATCHER_EXTRA_ROOT_CERTS=/var/lib/feedbackpulse/ca.pem
ENV
rabbitmq_password=$(sed -n 's/^RABBITMQ_PASSWORD=//p' "$env_file")

compose() {
  docker-compose --project-name "$project" --env-file "$env_file" \
    -f docker-compose.yml -f docker-compose.local.yml --profile demo "$@"
}

taken_down=false
cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    say "state and last log lines of $project:"
    compose ps >&2 || true
    compose logs --no-color --tail=40 >&2 || true
  fi
  if [ "$taken_down" = false ]; then
    compose down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || say "could not take $project down"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

say "building the local images"
images_started=$SECONDS
deploy/docker/local-images.sh debug
say "local images ready in $((SECONDS - images_started)) s"

# Static: docker-compose accepts the files, the base file on its own and with the local images.
docker-compose --env-file "$env_file" -f docker-compose.yml config -q || fail "docker-compose.yml is refused"
compose config -q || fail "docker-compose.yml with docker-compose.local.yml and the demo profile is refused"

# Services that run once and must exit 0; every other container must report `healthy`.
one_shot="migrate demo-seed"

# Waits until every container of the project is healthy or (one-shots) exited 0, with `expected`
# containers of service `service` among them; fails at once on a failed one-shot or a restart.
wait_until_settled() { # service expected
  local service=$1 expected=$2 deadline=$((SECONDS + 240)) pending count containers
  while :; do
    mapfile -t containers < <(compose ps -q)
    [ "${#containers[@]}" -gt 0 ] || fail "project $project has no containers"
    pending=""
    count=0
    while read -r name svc status exit_code health restarts; do
      [ "$restarts" = 0 ] || fail "$name restarted $restarts times"
      [ "$svc" = "$service" ] && count=$((count + 1))
      if [[ " $one_shot " == *" $svc "* ]]; then
        if [ "$status" = exited ]; then
          [ "$exit_code" = 0 ] || fail "$name exited with $exit_code"
        else
          pending+=" $name($status)"
        fi
      else
        [ "$status" = running ] || fail "$name is $status (exit code $exit_code)"
        [ "$health" != none ] || fail "$name has no health check"
        [ "$health" = healthy ] || pending+=" $name($health)"
      fi
    done < <(docker inspect --format \
      '{{.Name}} {{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.RestartCount}}' \
      "${containers[@]}")
    [ "$count" = "$expected" ] || pending+=" ($count of $expected $service containers)"
    [ -z "$pending" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || fail "not settled within 240 s:$pending"
    sleep 2
  done
}

say "starting project $project (demo network $demo_subnet)"
up_started=$SECONDS
compose up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "docker-compose up failed"; }
wait_until_settled fp-dispatcher 1
say "every container healthy or done in $((SECONDS - up_started)) s"

flush_after=$(compose exec -T postgres psql -X -A -t -U postgres -c 'SHOW backend_flush_after') ||
  fail "could not ask PostgreSQL for its backend_flush_after"
[ "$flush_after" = 256kB ] || fail "PostgreSQL's backend_flush_after is '$flush_after', not 256kB"
say "PostgreSQL runs with backend_flush_after $flush_after"

api="http://$(compose port fp-api 8080)"
dashboard="http://$(compose port fp-dashboard 8081)"
rabbitmq_ui="http://$(compose port rabbitmq 15672)"
api_key=$(compose logs --no-color demo-seed | sed -n 's/.*API key: *\(fpk_[0-9a-f]*\).*/\1/p' | tail -1)
[ -n "$api_key" ] || fail "the demo seed printed no API key"

status=$(curl -s -o /dev/null -w '%{http_code}' "$dashboard/login")
[ "$status" = 200 ] || fail "the dashboard's /login answered $status"
status=$(curl -s -o /dev/null -w '%{http_code}' -u "feedbackpulse:$rabbitmq_password" "$rabbitmq_ui/api/overview")
[ "$status" = 200 ] || fail "the RabbitMQ management API answered $status"

submit() { # text
  curl -fsS -X POST "$api/api/v2/submissions" -H "Authorization: Bearer $api_key" \
    -H 'Content-Type: application/json' \
    -d "$(jq -n --arg text "$1" '{campaign_id: 1, star_rating: 5, text_feedback: $text}')" >/dev/null ||
    fail "POST /api/v2/submissions failed"
}

# How many successful submission.created attempts whose payload carries `marker` the logs API lists.
logged_deliveries() { # marker
  curl -fsS "$api/api/v2/webhooks/logs?event_type=submission.created&limit=200" \
    -H "Authorization: Bearer $api_key" |
    jq --arg marker "$1" '[.data[] | select(.response_code == 200 and (.payload | contains($marker)))] | length'
}

wait_for_deliveries() { # marker expected
  local deadline=$((SECONDS + 60)) logged=0 received=0
  while :; do
    received=$(compose logs --no-color demo-receiver | grep -c -F "$1" || true)
    logged=$(logged_deliveries "$1")
    [ "$received" -ge "$2" ] && [ "$logged" -ge "$2" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] ||
      fail "of $2 submissions marked $1, the receiver got $received and the logs API lists $logged within 60 s"
    sleep 1
  done
}

one="$project one submission"
submit "$one"
wait_for_deliveries "$one" 1
say "a submission through $api reached the demo receiver and shows in /api/v2/webhooks/logs"

# Its attempts, summed over outcomes, status classes and formats: 0 before the first (a labelled
# counter appears with its first increment); nothing if /metrics is not the dispatcher's page.
dispatcher_attempts() { # index
  compose exec -T --index="$1" fp-dispatcher curl -fsS http://127.0.0.1:8082/metrics |
    awk '$1 ~ /^fp_dispatcher_attempts_total(\{|$)/ { sum += $2 } $1 == "fp_ready" { page = 1 }
         END { if (page) print sum + 0 }'
}

say "scaling to three dispatchers"
compose up -d --scale fp-dispatcher=3 >"$work/up.log" 2>&1 ||
  { cat "$work/up.log" >&2; fail "docker-compose up --scale fp-dispatcher=3 failed"; }
wait_until_settled fp-dispatcher 3
before=()
for index in 1 2 3; do
  before[index]=$(dispatcher_attempts "$index")
  [ -n "${before[index]}" ] || fail "dispatcher $index serves no metrics page on its health port"
done

batch="$project batch"
for n in $(seq 1 36); do submit "$batch $n"; done
wait_for_deliveries "$batch" 36
shares=""
for index in 1 2 3; do
  attempts=$(dispatcher_attempts "$index")
  delivered=$((attempts - before[index]))
  shares+=" dispatcher $index: $delivered"
  [ "$delivered" -gt 0 ] || fail "dispatcher $index made no attempt of the 36 (${shares# })"
done
say "36 submissions delivered and logged, shared by three dispatchers (${shares# })"

# Prometheus of the observability profile (Jaeger, the profile's other half, has no local stand-in
# and stays out of this run): it scrapes every service on its health port, the three dispatchers
# found through the compose DNS name, and loads the shipped alert rules.
compose up -d prometheus >"$work/up.log" 2>&1 ||
  { cat "$work/up.log" >&2; fail "docker-compose up prometheus failed"; }
prometheus="http://$(compose port prometheus 9090)"
promql() { # query: its one value, empty while there is none
  curl -fsS -G "$prometheus/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    jq -r '.data.result[0].value[1] // empty'
}
deadline=$((SECONDS + 90))
until [ "$(promql 'count(up == 1)')" = 6 ] && [ -n "$(promql 'sum(fp_dispatcher_attempts_total)')" ]; do
  [ "$SECONDS" -lt "$deadline" ] ||
    fail "Prometheus did not see all 6 targets up within 90 s: $(curl -fsS "$prometheus/api/v1/targets" 2>&1 |
      jq -c '[.data.activeTargets[] | {job: .labels.job, health, lastError}]' 2>&1)"
  sleep 2
done
scraped=$(promql 'sum(fp_dispatcher_attempts_total)')
[ "${scraped%.*}" -ge 37 ] || fail "Prometheus sums $scraped dispatcher attempts, expected at least 37"
rules=$(curl -fsS "$prometheus/api/v1/rules" | jq '[.data.groups[].rules[]] | length')
[ "$rules" -gt 0 ] || fail "Prometheus loaded no alert rules"
say "Prometheus scrapes all 6 service containers ($scraped dispatcher attempts) with $rules alert rules"

# The services first, while PostgreSQL and RabbitMQ are still up (`down` stops everything at once):
# on SIGTERM each drains and exits 0.
compose stop --timeout 30 fp-api fp-dispatcher fp-log-ingest fp-dashboard >/dev/null 2>&1
mapfile -t services < <(compose ps -q fp-api fp-dispatcher fp-log-ingest fp-dashboard)
[ "${#services[@]}" = 6 ] || fail "expected 6 service containers, found ${#services[@]}"
while read -r name status exit_code; do
  [ "$status $exit_code" = "exited 0" ] || fail "$name is $status ($exit_code) after SIGTERM"
done < <(docker inspect --format '{{.Name}} {{.State.Status}} {{.State.ExitCode}}' "${services[@]}")
say "the services drained and exited 0 on SIGTERM"
compose down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1
taken_down=true
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
left+=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
left+=$(docker network ls -q --filter "label=com.docker.compose.project=$project")
[ -z "$left" ] || fail "docker-compose down left containers, volumes or networks of $project"
say "passed in $((SECONDS - started)) s; taken down, nothing of $project left"
