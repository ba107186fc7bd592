#!/usr/bin/env bash
# Long runs, A and W in the order given, RabbitMQ restarted before each so both start alike:
#   A: RabbitMQ's default quorum WAL (raft.wal_max_size_bytes 512 MiB in 3.10);
#   W: raft.wal_max_size_bytes = 67108864 (64 MiB), in /etc/rabbitmq/rabbitmq.conf for the run.
# Each run has sitting.sh's samplers beside it.   wal-sitting.sh <out dir> "<order>" <flags...>
set -u
out=$1; shift; order=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
cd /work/main
mkdir -p "$out"
conf=/etc/rabbitmq/rabbitmq.conf
node="rabbit@$(hostname -s)"
n=0
for v in $order; do
  n=$((n + 1)); run=$out/$v-$n; mkdir -p "$run"
  rm -f $conf
  [[ $v == W ]] && echo "raft.wal_max_size_bytes = 67108864" > $conf
  rabbitmqctl -q -n "$node" stop > /dev/null 2>&1
  while (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; do sleep 0.5; done
  rabbitmq-server -detached > /dev/null 2>&1
  rabbitmqctl -q -n "$node" await_startup > /dev/null 2>&1
  until (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; do sleep 0.5; done
  rabbitmqctl -q -n "$node" eval 'application:get_env(ra, wal_max_size_bytes).' > "$run/wal_max_size_bytes.txt" 2>&1
  sync; sleep 5
  python3 "$here/threads.py" "$run/threads.txt" fp-dispatcher fp-bench-receiv fp-bench postgres beam.smp > /dev/null 2>&1 &
  threads=$!
  python3 "$here/../disk-iops/diskstats.py" vda "$run/diskstats.txt" 900 > /dev/null 2>&1 &
  disk=$!
  python3 "$here/walwatch.py" /var/lib/rabbitmq/mnesia/$node/quorum/$node "$run/wal.txt" > /dev/null 2>&1 &
  wal=$!
  sleep 1
  /work/bin-A/fp-bench --bin-dir /work/bin-A "$@" --latencies-dir "$run/latencies" --results-dir "$run" > "$run/stdout.txt" 2>&1
  echo "$v-$n rc=$? $(date -u +%T)" >> "$out/runs.log"
  kill -TERM $threads $disk $wal; wait $threads $disk $wal 2>/dev/null
  python3 bench/tools/latency_timeline.py "$run/latencies" > "$run/stalls.txt" 2>&1
  python3 "$here/../disk-iops/iops.py" "$run" --seconds > "$run/iops.txt" 2>&1
done
rm -f $conf
rabbitmqctl -q -n "$node" stop > /dev/null 2>&1
while (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; do sleep 0.5; done
rabbitmq-server -detached > /dev/null 2>&1
rabbitmqctl -q -n "$node" await_startup > /dev/null 2>&1
echo done >> "$out/runs.log"
