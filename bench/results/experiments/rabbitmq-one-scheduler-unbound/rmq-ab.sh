#!/usr/bin/env bash
# Runs fp-bench on RabbitMQ started afresh before each run with a variant's environment, rounds
# in alternating order: rmq-ab.sh <label> <rounds> NAME="VAR=value VAR2=value" ... -- <fp-bench flags>
set -euo pipefail
cd /work/main
label=$1 rounds=$2; shift 2
declare -A envs; names=()
while [[ $# -gt 0 && $1 != "--" ]]; do names+=("${1%%=*}"); envs[${1%%=*}]=${1#*=}; shift; done
shift
out=bench/results/experiments/$label
mkdir -p "$out"
node="rabbit@$(hostname -s)"
start_node() {
  rabbitmqctl -n "$node" stop >/dev/null 2>&1 || true
  for i in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || break; sleep 0.5; done
  env $1 rabbitmq-server -detached
  for i in $(seq 240); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 0.5; done
  rabbitmqctl -n "$node" await_startup >/dev/null
  sleep 3
}
for round in $(seq 1 "$rounds"); do
  order=("${names[@]}")
  if (( round % 2 == 0 )); then order=(); for (( i=${#names[@]}-1; i>=0; i-- )); do order+=("${names[i]}"); done; fi
  for v in "${order[@]}"; do
    start_node "${envs[$v]}"
    online=$(rabbitmqctl -n "$node" eval 'erlang:system_info(schedulers_online).')
    bind=$(rabbitmqctl -n "$node" eval 'erlang:system_info(scheduler_bind_type).')
    dir=$out/$v-$round; mkdir -p "$dir"
    echo "== $label: $v round $round (env '${envs[$v]}', schedulers online $online, bind type $bind)" | tee "$dir/rabbitmq-flags.txt"
    /work/bench-bins/M/fp-bench --profile release --bin-dir /work/bench-bins/M --results-dir "$dir" "$@" 2>&1 \
      | python3 -u bench/tools/stamp.py > "$dir/stdout.txt"
  done
done
start_node "X=1"
python3 bench/tools/summarize.py "$out" | tee "$out/summary.md"
