#!/usr/bin/env bash
# Runs of fp-bench as given, each with the CPU by kind every 10 ms, PostgreSQL logging every
# autovacuum and checkpoint and (from the sitting "vmstat") the kernel's dirty pages and write-out;
# then windows.py on each. Variant N turns autovacuum off for its run; variant S sets
# shared_buffers to 2GB, and in a sitting that has S PostgreSQL restarts before every run, so each
# starts cold; variant W compresses the WAL's full-page images (wal_compression = lz4). From the
# sitting "wal-compression" on, walsample.sh samples pg_stat_wal over the whole sitting.
set -u
out=$1; shift; order=$1; shift
cd /work/main
mkdir -p "$out"
psql_admin() { psql -X -q -A -t -h 127.0.0.1 -U postgres -d postgres -c "$1"; }
psql_admin "ALTER SYSTEM SET log_autovacuum_min_duration = 0"
pglog=/var/log/postgresql/postgresql-15-main.log
n=0
./bench/results/experiments/long-phase-p50/walsample.sh "$out/wal.txt" &
walsampler=$!
for v in $order; do
  n=$((n + 1)); run=$out/$v-$n; mkdir -p "$run"
  if [[ $v == N ]]; then psql_admin "ALTER SYSTEM SET autovacuum = off"; else psql_admin "ALTER SYSTEM RESET autovacuum"; fi
  if [[ $v == W ]]; then psql_admin "ALTER SYSTEM SET wal_compression = lz4"; else psql_admin "ALTER SYSTEM RESET wal_compression"; fi
  if [[ $v == S ]]; then psql_admin "ALTER SYSTEM SET shared_buffers = '2GB'"; else psql_admin "ALTER SYSTEM RESET shared_buffers"; fi
  psql_admin "SELECT pg_reload_conf()" >/dev/null; sleep 1
  if [[ " $order " == *" S "* ]]; then
    pg_ctlcluster --skip-systemctl-redirect 15 main restart
    until psql_admin "select 1" >/dev/null 2>&1; do sleep 0.2; done
  fi
  { for s in autovacuum backend_flush_after shared_buffers wal_compression max_wal_size log_autovacuum_min_duration; do
      echo "$s $(psql_admin "show $s")"; done; sysctl vm.dirty_background_bytes vm.dirty_background_ratio; } > "$run/settings.txt"
  psql_admin "select now(), * from pg_stat_bgwriter" > "$run/bgwriter-before.txt"
  pg_from=$(stat -c %s "$pglog")
  sync; sleep 5
  # A background job of a script ignores SIGINT, so the sampler is stopped by SIGTERM, made an exit.
  python3 -c 'import runpy, signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")' \
    bench/results/experiments/nondisk-stalls/cpu_sampler.py 500 "$run/cpu.txt" &
  sampler=$!
  python3 bench/results/experiments/writeback-paced/vmsample.py "$run/vmstat.txt" 500 > /dev/null 2>&1 &
  vm=$!
  sleep 1
  /work/bin-A/fp-bench --bin-dir /work/bin-A "$@" --latencies-dir "$run/latencies" --results-dir "$run" > "$run/stdout.txt" 2>&1
  echo "$v-$n rc=$? $(date -u +%T)" >> "$out/runs.log"
  kill -TERM $sampler $vm; wait $sampler $vm 2>/dev/null
  psql_admin "select now(), * from pg_stat_bgwriter" > "$run/bgwriter-after.txt"
  tail -c +$((pg_from + 1)) "$pglog" > "$run/postgresql.log"
  python3 bench/results/experiments/long-phase-p50/windows.py "$run" > "$run/windows.txt" 2>&1
done
kill $walsampler
psql_admin "ALTER SYSTEM RESET autovacuum"
psql_admin "ALTER SYSTEM RESET wal_compression"
psql_admin "ALTER SYSTEM RESET shared_buffers"
[[ " $order " == *" S "* ]] && pg_ctlcluster --skip-systemctl-redirect 15 main restart
psql_admin "ALTER SYSTEM RESET log_autovacuum_min_duration"
psql_admin "SELECT pg_reload_conf()" >/dev/null
echo done >> "$out/runs.log"
