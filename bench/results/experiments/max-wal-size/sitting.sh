#!/usr/bin/env bash
# A/W sitting: A = max_wal_size at its default (1GB), W = 8GB; backend_flush_after as shipped (256kB).
# PostgreSQL is restarted before every run, as in ../shared-buffers/sitting.sh; pg_stat_wal is kept too.
set -u
out=$1; rounds=$2; shift 2
cd /work/main
mkdir -p "$out"
psql_admin() { psql -X -q -A -t -h 127.0.0.1 -U postgres -d postgres -c "$1"; }
for round in $(seq 1 "$rounds"); do
  if (( round % 2 == 1 )); then order="A W"; else order="W A"; fi
  for v in $order; do
    run=$out/$v-$round; mkdir -p "$run"
    if [[ $v == W ]]; then psql_admin "ALTER SYSTEM SET max_wal_size = '8GB'"; else psql_admin "ALTER SYSTEM RESET max_wal_size"; fi
    pg_ctlcluster --skip-systemctl-redirect 15 main restart
    until psql_admin "select 1" >/dev/null 2>&1; do sleep 0.2; done
    { psql_admin "show max_wal_size"; psql_admin "show backend_flush_after"; sysctl vm.dirty_background_bytes vm.dirty_background_ratio vm.dirty_expire_centisecs; } > "$run/settings.txt"
    psql_admin "select now(), * from pg_stat_bgwriter" > "$run/bgwriter-before.txt"; psql_admin "select now(), * from pg_stat_wal" > "$run/wal-before.txt"
    sync; sleep 5
    python3 bench/tools/sync_trace.py record 600 "$run/syncs" > "$run/trace.log" 2>&1 &
    tracer=$!
    python3 bench/results/experiments/writeback-paced/vmsample.py "$run/vmstat.txt" 600 > /dev/null 2>&1 &
    sampler=$!
    sleep 2
    /work/bin-A/fp-bench --bin-dir /work/bin-A "$@" --latencies-dir "$run/latencies" --results-dir "$run" > "$run/stdout.txt" 2>&1
    echo "$v-$round rc=$?" >> "$out/runs.log"
    psql_admin "select now(), * from pg_stat_bgwriter" > "$run/bgwriter-after.txt"; psql_admin "select now(), * from pg_stat_wal" > "$run/wal-after.txt"
    kill -TERM $tracer $sampler; wait $tracer $sampler 2>/dev/null
    python3 bench/tools/sync_trace.py report "$run/syncs" 20 "$run/latencies" > "$run/syncs-report.txt" 2>&1
  done
done
psql_admin "ALTER SYSTEM RESET max_wal_size"
pg_ctlcluster --skip-systemctl-redirect 15 main restart
echo done >> "$out/runs.log"
