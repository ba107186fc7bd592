#!/usr/bin/env python3
"""CPU (ms per second) and time waiting to run, by program, second by second, from threads.py's
file (the dispatcher's threads summed): which program's share moves around a stall.

Usage: cpu_by_second.py <threads.txt> <from HH:MM:SS> <to HH:MM:SS>   (UTC)
"""
import collections
import sys
from datetime import datetime, timezone


def main(path, start, end):
    last, cpu, wait = {}, collections.defaultdict(collections.Counter), collections.defaultdict(collections.Counter)
    programs, machine, machine_last = set(), {}, None
    for line in open(path):
        parts = line.split()
        if parts[1] == "machine":  # threads.py's later form: the whole machine's jiffies
            second = datetime.fromtimestamp(int(parts[0]) / 1e9, timezone.utc).strftime("%H:%M:%S")
            busy, idle = int(parts[3]), int(parts[5])
            if machine_last and start <= second <= end:
                b, i = machine.get(second, (0, 0))
                machine[second] = (b + busy - machine_last[0], i + idle - machine_last[1])
            machine_last = (busy, idle)
            continue
        now, pid, tid, program, name, state, where, c, w = parts[:9]
        c, w = int(c), int(w)
        before = last.get((pid, tid))
        last[(pid, tid)] = (c, w)
        second = datetime.fromtimestamp(int(now) / 1e9, timezone.utc).strftime("%H:%M:%S")
        if before is None or not start <= second <= end:
            continue
        programs.add(program)
        cpu[second][program] += c - before[0]
        wait[second][program] += w - before[1]
    shown = sorted(programs)
    print("second     " + "  ".join(f"{p[:15]:>15s}" for p in shown) + "   all  machine  (cpu ms / waiting ms; machine: CPUs busy, from jiffies at 100 Hz)")
    for second in sorted(cpu):
        print(f"{second}  " + "  ".join(f"{cpu[second][p] / 1e6:7.0f}/{wait[second][p] / 1e6:<7.0f}" for p in shown)
              + f"  {sum(cpu[second].values()) / 1e6:5.0f}"
              + (f"  {machine[second][0] / 100:5.2f}" if sum(machine.get(second, (0, 0))) else ""))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
