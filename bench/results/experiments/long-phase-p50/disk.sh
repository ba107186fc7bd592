#!/usr/bin/env bash
# The disk under /work on its own, nothing else running: is its write rate held to a fixed figure?
# 1) 2 GiB written with O_DIRECT in 1 MiB blocks (the device's own rate, no page cache);
# 2) 4 GiB written through the page cache, then fsync'd, with the kernel's write-out sampled every
#    20 ms beside it (../writeback-paced/vmsample.py), so its rate second by second shows whether
#    it is flat or comes in bursts;
# 3) pg_test_fsync for 2 s a test: how long one flush of a small write takes.
set -u
out=$1
cd /work/main
mkdir -p "$out"
probe=/work/disk-probe.bin
sync; sleep 2
dd if=/dev/zero of=$probe bs=1M count=2048 oflag=direct 2> "$out/direct.txt"
rm -f $probe; sync; sleep 2
python3 bench/results/experiments/writeback-paced/vmsample.py "$out/vmstat.txt" 300 > /dev/null 2>&1 &
vm=$!
sleep 1
dd if=/dev/zero of=$probe bs=1M count=4096 conv=fsync 2> "$out/buffered.txt"
sleep 1
kill -TERM $vm; wait $vm 2>/dev/null
rm -f $probe
/usr/lib/postgresql/15/bin/pg_test_fsync -s 2 -f /work/pg-test-fsync.out > "$out/pg_test_fsync.txt" 2>&1
rm -f /work/pg-test-fsync.out
# The write-out second by second (MiB), from the sampler's pgpgout (KiB).
python3 - "$out/vmstat.txt" > "$out/writeout-by-second.txt" <<'PY'
import sys
rows = [[int(v) for v in line.split()] for line in open(sys.argv[1])]
seconds = {}
for a, b in zip(rows, rows[1:]):
    seconds[b[0] // 10**9] = seconds.get(b[0] // 10**9, 0) + b[3] - a[3]
first = min(seconds)
for second in sorted(seconds):
    print(f"{second - first:4d} s  {seconds[second] / 1024:8.1f} MiB")
PY
rm -f "$out/vmstat.txt"
