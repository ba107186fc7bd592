#!/usr/bin/env bash
# The disk under /work on its own, nothing else running: how many small writes a second it takes,
# beside the large ones long-phase-p50/disk.sh measured. Each job writes a 1 GiB file for 20 s:
#   seq-1m-qd8      1 MiB sequential writes, O_DIRECT, 8 in flight (the device's bandwidth);
#   rand-8k-qd1     8 KiB random writes, O_DIRECT, one at a time (a lone backend's write);
#   rand-8k-qd32    8 KiB random writes, O_DIRECT, 32 in flight (the kernel's writeback of
#                   scattered dirty pages);
#   rand-8k-qd32-fdatasync  as rand-8k-qd32 through the page cache, fdatasync every 64 writes
#                   (libaio submits buffered writes one at a time, so not 32 in flight here);
#   wal-8k-fdatasync  8 KiB sequential writes, fdatasync after each (a WAL flush).
set -u
out=$1
mkdir -p "$out"
file=/work/fio-probe.bin
common=(--filename=$file --size=1g --time_based --runtime=20 --ioengine=libaio --group_reporting
        --output-format=normal)
sync; sleep 2
fio --name=seq-1m-qd8 --rw=write --bs=1m --iodepth=8 --direct=1 "${common[@]}" > "$out/seq-1m-qd8.txt" 2>&1
fio --name=rand-8k-qd1 --rw=randwrite --bs=8k --iodepth=1 --direct=1 "${common[@]}" > "$out/rand-8k-qd1.txt" 2>&1
fio --name=rand-8k-qd32 --rw=randwrite --bs=8k --iodepth=32 --direct=1 "${common[@]}" > "$out/rand-8k-qd32.txt" 2>&1
fio --name=rand-8k-qd32-fdatasync --rw=randwrite --bs=8k --iodepth=32 --direct=0 --fdatasync=64 "${common[@]}" \
  > "$out/rand-8k-qd32-fdatasync.txt" 2>&1
fio --name=wal-8k-fdatasync --rw=write --bs=8k --iodepth=1 --direct=0 --fdatasync=1 "${common[@]}" \
  > "$out/wal-8k-fdatasync.txt" 2>&1
rm -f $file
for job in seq-1m-qd8 rand-8k-qd1 rand-8k-qd32 rand-8k-qd32-fdatasync wal-8k-fdatasync; do
  printf '%-24s %s\n' $job "$(grep -m1 -E '^ +write:' "$out/$job.txt" | sed 's/^ *//')"
  printf '%-24s %s\n' "" "$(grep -m1 -E '^ +clat \(' "$out/$job.txt" | sed 's/^ *//')"
  grep -q 'sync percentiles' "$out/$job.txt" &&
    printf '%-24s fdatasync %s\n' "" "$(grep -A4 'sync percentiles' "$out/$job.txt" | grep -o '50.00th=\[ *[0-9]*\]\|99.00th=\[ *[0-9]*\]' | tr -d ' ' | paste -sd' ') us"
done > "$out/summary.txt"
cat "$out/summary.txt"
