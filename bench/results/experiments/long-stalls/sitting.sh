#!/usr/bin/env bash
# Long paced phases with the host's writeback from 16 MB (K) and backend_flush_after 256kB (as shipped):
# what the stalls with no slow fsync come with. Every run: sync trace, CPU by kind every 10 ms,
# PostgreSQL logging every autovacuum and checkpoint, RabbitMQ's log kept.
set -u
out=$1; runs=$2; shift 2
cd /work/main
mkdir -p "$out"
psql_admin() { psql -X -q -A -t -h 127.0.0.1 -U postgres -d postgres -c "$1"; }
psql_admin "ALTER SYSTEM SET log_autovacuum_min_duration = 0"
psql_admin "SELECT pg_reload_conf()" >/dev/null
sysctl -w vm.dirty_background_bytes=16777216 >/dev/null
pglog=/var/log/postgresql/postgresql-15-main.log
rmqlog=$(ls /var/log/rabbitmq/rabbit@*.log | grep -v upgrade | head -1)
for n in $(seq 1 "$runs"); do
  run=$out/run-$n; mkdir -p "$run"
  { psql_admin "show backend_flush_after"; psql_admin "show log_autovacuum_min_duration"; sysctl vm.dirty_background_bytes vm.dirty_expire_centisecs; } > "$run/settings.txt"
  pg_from=$(stat -c %s "$pglog"); rmq_from=$(stat -c %s "$rmqlog")
  sync; sleep 5
  python3 bench/tools/sync_trace.py record 600 "$run/syncs" > /dev/null 2>&1 &
  tracer=$!
  python3 bench/results/experiments/nondisk-stalls/cpu_sampler.py 400 "$run/cpu.txt" &
  sampler=$!
  python3 bench/results/experiments/writeback-paced/vmsample.py "$run/vmstat.txt" 400 > /dev/null 2>&1 &
  vm=$!
  sleep 2
  /work/bin-A/fp-bench --bin-dir /work/bin-A "$@" --latencies-dir "$run/latencies" --results-dir "$run" > "$run/stdout.txt" 2>&1
  echo "run-$n rc=$?" >> "$out/runs.log"
  kill -TERM $tracer $vm; kill -INT $sampler; wait $tracer $vm $sampler 2>/dev/null
  tail -c +$((pg_from + 1)) "$pglog" > "$run/postgresql.log"
  tail -c +$((rmq_from + 1)) "$rmqlog" > "$run/rabbitmq.log"
  python3 bench/tools/sync_trace.py report "$run/syncs" 20 "$run/latencies" > "$run/syncs-report.txt" 2>&1
  python3 bench/results/experiments/nondisk-stalls/stall_cpu.py "$run/syncs-report.txt" "$run/cpu.txt" "$run/latencies" > "$run/stall-cpu.txt" 2>&1
done
psql_admin "ALTER SYSTEM RESET log_autovacuum_min_duration"
psql_admin "SELECT pg_reload_conf()" >/dev/null
sysctl -w vm.dirty_background_ratio=10 >/dev/null
echo done >> "$out/runs.log"
