#!/usr/bin/env bash
# A/K sitting at equal paced rates: A = Debian's writeback defaults, K = vm.dirty_background_bytes=16 MiB.
set -u
out=$1; rounds=$2; shift 2
cd /work/main
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  if (( round % 2 == 1 )); then order="A K"; else order="K A"; fi
  for v in $order; do
    run=$out/$v-$round; mkdir -p "$run"
    sysctl -w vm.dirty_background_ratio=10 vm.dirty_expire_centisecs=3000 >/dev/null
    if [[ $v == K ]]; then sysctl -w vm.dirty_background_bytes=16777216 >/dev/null; fi
    sysctl vm.dirty_background_bytes vm.dirty_background_ratio vm.dirty_expire_centisecs > "$run/sysctl.txt"
    sync; sleep 5
    python3 bench/tools/sync_trace.py record 600 "$run/syncs" > "$run/trace.log" 2>&1 &
    tracer=$!
    python3 bench/results/experiments/writeback-paced/vmsample.py "$run/vmstat.txt" 200 > /dev/null 2>&1 &
    sampler=$!
    sleep 2
    /work/bin-A/fp-bench --bin-dir /work/bin-A "$@" --latencies-dir "$run/latencies" --results-dir "$run" > "$run/stdout.txt" 2>&1
    echo "$v-$round rc=$?" >> "$out/runs.log"
    kill -TERM $tracer $sampler; wait $tracer $sampler 2>/dev/null
    python3 bench/tools/sync_trace.py report "$run/syncs" 20 "$run/latencies" > "$run/syncs-report.txt" 2>&1
  done
done
sysctl -w vm.dirty_background_ratio=10 vm.dirty_expire_centisecs=3000 >/dev/null
echo done >> "$out/runs.log"
