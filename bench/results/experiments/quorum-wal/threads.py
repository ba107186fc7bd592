"""Every 20 ms, each thread of the named programs: its state (R, S, D...), the kernel function it
sleeps in (wchan; for a thread in D, the top of its kernel stack), its CPU time and its time
waiting to run (schedstat, ns), a line a thread:
    <UTC ns> <pid> <tid> <program> <thread name> <state> <wchan> <cpu ns> <wait ns> <timeslices>
and a line for the whole machine: <UTC ns> machine busy <jiffies> idle <jiffies>
Runs until SIGTERM (which ends it with the file flushed). Programs are matched on the process's
comm, at most 15 characters (beam.smp's threads are many, so only its schedulers are listed); a
PostgreSQL process's thread name is its kind from its title (backend, autovacuum_worker,
checkpointer...).

    threads.py <out file> <program>...   e.g. threads.py t.txt fp-dispatcher fp-bench-receiv postgres
"""
import os
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
path, programs = sys.argv[1], set(sys.argv[2:])


def read(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None


with open(path, "w") as out:
    pids, refreshed, kinds = [], 0, {}
    while True:
        now = time.time_ns()
        if now - refreshed > 10**9:  # new processes (the bench starts its own) every second
            pids = [pid for pid in os.listdir("/proc") if pid.isdigit()
                    and (read(f"/proc/{pid}/comm") or "").strip() in programs]
            for pid in pids:  # a PostgreSQL process is named by its kind (autovacuum, checkpointer...)
                title = (read(f"/proc/{pid}/cmdline") or "").split("\0")[0]
                if title.startswith("postgres: ") and pid not in kinds:
                    kind = title.split(": ")[-1].split()
                    # An autovacuum worker's title also ends with the database's name, so it is
                    # told apart before the backends (named by their fp_ database and role).
                    if "autovacuum worker" in title:
                        kinds[pid] = "autovacuum_worker"
                    elif "fp_" in title:
                        kinds[pid] = "backend"
                    else:
                        kinds[pid] = "_".join(w for w in kind if w.isalpha())[:24] or "postgres"
            refreshed = now
        for pid in pids:
            program = (read(f"/proc/{pid}/comm") or "?").strip()
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                base = f"/proc/{pid}/task/{tid}"
                name = kinds.get(pid) or (read(f"{base}/comm") or "?").strip().replace(" ", "_")
                if program == "beam.smp" and "sched" not in name:
                    continue
                stat, schedstat, wchan = read(f"{base}/stat"), read(f"{base}/schedstat"), read(f"{base}/wchan")
                if not stat or not schedstat:
                    continue
                state = stat.rsplit(")", 1)[1].split()[0]
                cpu, wait, slices = schedstat.split()[:3]
                where = wchan or "-"
                if state == "D":  # blocked in the kernel: the top of its stack says on what
                    frames = [f.split()[-1].split("+")[0] for f in (read(f"{base}/stack") or "").splitlines()[:5]]
                    where = "<".join(frames) or where
                out.write(f"{now} {pid} {tid} {program} {name} {state} {where} {cpu} {wait} {slices}\n")
        # The whole machine's CPU (user+nice+system+irq+softirq+steal jiffies, and idle+iowait).
        fields = [int(v) for v in read("/proc/stat").split("\n", 1)[0].split()[1:]]
        out.write(f"{now} machine busy {sum(fields[:3]) + sum(fields[5:8])} idle {fields[3] + fields[4]}\n")
        time.sleep(0.02)
