#!/usr/bin/env bash
# Runs of fp-bench as given, each with the disk's counters every 100 ms (diskstats.py) and the
# kernel's dirty pages and write-out every 20 ms (../writeback-paced/vmsample.py) beside it, then
# iops.py on each.  run.sh <out dir> <runs> <fp-bench flags...>
set -u
out=$1; shift; runs=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
cd /work/main
mkdir -p "$out"
device=$(lsblk -no pkname "$(df --output=source /var/lib/postgresql | tail -1)" 2>/dev/null)
device=${device:-vda}
for n in $(seq 1 "$runs"); do
  run=$out/$n; mkdir -p "$run"
  sync; sleep 5
  python3 "$here/diskstats.py" "$device" "$run/diskstats.txt" 900 > /dev/null 2>&1 &
  disk=$!
  python3 bench/results/experiments/writeback-paced/vmsample.py "$run/vmstat.txt" 900 > /dev/null 2>&1 &
  vm=$!
  sleep 1
  /work/bin-A/fp-bench --bin-dir /work/bin-A "$@" --latencies-dir "$run/latencies" --results-dir "$run" > "$run/stdout.txt" 2>&1
  echo "$n rc=$? $(date -u +%T)" >> "$out/runs.log"
  sleep 2
  kill -TERM $disk $vm; wait $disk $vm 2>/dev/null
  python3 "$here/iops.py" "$run" --seconds > "$run/iops.txt" 2>&1
done
echo done >> "$out/runs.log"
