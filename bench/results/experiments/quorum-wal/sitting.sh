#!/usr/bin/env bash
# Runs of fp-bench as given, each with: the threads of the dispatcher, the receiver, the load
# generator, PostgreSQL and RabbitMQ's schedulers every 20 ms (threads.py); the disk's counters
# every 100 ms (../disk-iops/diskstats.py); RabbitMQ's quorum WAL files (walwatch.py). The
# dispatcher's log file is copied in, compressed, for stages.py.
#   sitting.sh <out dir> <runs> <flags...>
set -u
out=$1; shift; runs=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
cd /work/main
mkdir -p "$out"
for n in $(seq 1 "$runs"); do
  run=$out/$n; mkdir -p "$run"
  sync; sleep 5
  python3 "$here/threads.py" "$run/threads.txt" fp-dispatcher fp-bench-receiv fp-bench postgres beam.smp > /dev/null 2>&1 &
  threads=$!
  python3 "$here/../disk-iops/diskstats.py" vda "$run/diskstats.txt" 900 > /dev/null 2>&1 &
  disk=$!
  python3 "$here/walwatch.py" /var/lib/rabbitmq/mnesia/rabbit@vm/quorum/rabbit@vm "$run/wal.txt" > /dev/null 2>&1 &
  wal=$!
  sleep 1
  /work/bin-A/fp-bench --bin-dir /work/bin-A "$@" --latencies-dir "$run/latencies" --results-dir "$run" > "$run/stdout.txt" 2>&1
  echo "$n rc=$? $(date -u +%T)" >> "$out/runs.log"
  kill -TERM $threads $disk $wal; wait $threads $disk $wal 2>/dev/null
  deployment=$(grep -o 'fp_bench_[0-9a-f]*' "$run/stdout.txt" | head -1)
  gzip -c "/work/bench-runs/$deployment/fp-dispatcher-1.log" > "$run/fp-dispatcher-1.log.gz"
  python3 bench/tools/latency_timeline.py "$run/latencies" > "$run/stalls.txt" 2>&1
  python3 "$here/../disk-iops/iops.py" "$run" --seconds > "$run/iops.txt" 2>&1
done
echo done >> "$out/runs.log"
