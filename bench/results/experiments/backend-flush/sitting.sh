#!/usr/bin/env bash
# A/F sitting at equal paced rates: A = backend_flush_after at its default (0, off), F = 256kB.
# PostgreSQL is restarted before every run, as in ../shared-buffers/sitting.sh.
set -u
out=$1; rounds=$2; shift 2
cd /work/main
mkdir -p "$out"
psql_admin() { psql -X -q -A -t -h 127.0.0.1 -U postgres -d postgres -c "$1"; }
for round in $(seq 1 "$rounds"); do
  if (( round % 2 == 1 )); then order="A F"; else order="F A"; fi
  for v in $order; do
    run=$out/$v-$round; mkdir -p "$run"
    if [[ $v == F ]]; then psql_admin "ALTER SYSTEM SET backend_flush_after = '256kB'"; else psql_admin "ALTER SYSTEM RESET backend_flush_after"; fi
    pg_ctlcluster --skip-systemctl-redirect 15 main restart
    until psql_admin "select 1" >/dev/null 2>&1; do sleep 0.2; done
    { psql_admin "show shared_buffers"; psql_admin "show backend_flush_after"; sysctl vm.dirty_background_bytes vm.dirty_background_ratio vm.dirty_expire_centisecs; } > "$run/settings.txt"
    psql_admin "select now(), * from pg_stat_bgwriter" > "$run/bgwriter-before.txt"
    sync; sleep 5
    python3 bench/tools/sync_trace.py record 600 "$run/syncs" > "$run/trace.log" 2>&1 &
    tracer=$!
    python3 bench/results/experiments/writeback-paced/vmsample.py "$run/vmstat.txt" 600 > /dev/null 2>&1 &
    sampler=$!
    sleep 2
    /work/bin-A/fp-bench --bin-dir /work/bin-A "$@" --latencies-dir "$run/latencies" --results-dir "$run" > "$run/stdout.txt" 2>&1
    echo "$v-$round rc=$?" >> "$out/runs.log"
    psql_admin "select now(), * from pg_stat_bgwriter" > "$run/bgwriter-after.txt"
    kill -TERM $tracer $sampler; wait $tracer $sampler 2>/dev/null
    python3 bench/tools/sync_trace.py report "$run/syncs" 20 "$run/latencies" > "$run/syncs-report.txt" 2>&1
  done
done
psql_admin "ALTER SYSTEM RESET backend_flush_after"
pg_ctlcluster --skip-systemctl-redirect 15 main restart
echo done >> "$out/runs.log"
