"""For each run of a sitting (`ab.sh`), PostgreSQL's autovacuum and checkpoint work inside each
events phase. PostgreSQL must log every autovacuum (`log_autovacuum_min_duration = 0`) and its
checkpoints (`log_checkpoints`, on by default).

usage: pg_background.py <experiment dir> <postgres log>
A phase runs from its 'fp-bench: <phase>' line to the next 'fp-bench:' (or the last 'results:')
line of the run's stdout.txt (timestamped by stamp.py). An autovacuum or analyze is logged when it ends, with
its elapsed time and CPU; it is counted in a phase by the part of its elapsed time inside it
(CPU prorated). A checkpoint counts where its 'complete' line falls."""
import datetime as dt, pathlib, re, sys

folder, pglog = sys.argv[1], sys.argv[2]
day = None
def t(hms, date):
    return dt.datetime.strptime(date + ' ' + hms, '%Y-%m-%d %H:%M:%S.%f')

entries = []  # (start, end, kind, table, cpu)
lines = pathlib.Path(pglog).read_text(errors='replace').splitlines()
stamp = re.compile(r'^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d+) UTC \[\d+\] (?:\S+ )?LOG:  (.*)$')
i = 0
while i < len(lines):
    m = stamp.match(lines[i])
    if not m:
        i += 1; continue
    date, hms, msg = m.groups(); day = date
    end = t(hms, date)
    if msg.startswith('automatic vacuum') or msg.startswith('automatic analyze'):
        table = re.search(r'"([^"]+)"', msg).group(1).split('.')[-1]
        kind = 'vacuum' if 'vacuum' in msg.split(' of ')[0] else 'analyze'
        cpu = elapsed = 0.0
        j = i + 1
        while j < len(lines) and not stamp.match(lines[j]):
            u = re.search(r'CPU: user: ([\d.]+) s, system: ([\d.]+) s, elapsed: ([\d.]+) s', lines[j])
            if u:
                cpu = float(u.group(1)) + float(u.group(2)); elapsed = float(u.group(3))
            j += 1
        entries.append((end - dt.timedelta(seconds=elapsed), end, kind, table, cpu))
        i = j; continue
    if msg.startswith('checkpoint complete'):
        w = re.search(r'wrote (\d+) buffers', msg)
        tot = re.search(r'total=([\d.]+) s', msg)
        entries.append((end - dt.timedelta(seconds=float(tot.group(1))), end, 'checkpoint', w.group(1) + ' buffers', 0.0))
    i += 1

for run in sorted(pathlib.Path(folder).glob('*/stdout.txt'), key=lambda p: (p.parent.name.split('-')[-1], p.parent.name)):
    marks = []
    for line in run.read_text().splitlines():
        # The last phase ends with the run's `results:` line.
        m = re.match(r'^(\d\d:\d\d:\d\d\.\d+) (?:fp-bench: (.*)|results: .*)$', line)
        if m:
            marks.append((t(m.group(1), day), m.group(2) or ''))
    for (start, name), (end, _) in zip(marks, marks[1:]):
        if not name.startswith('events:'):
            continue
        inside = []
        vac_cpu = 0.0
        for (s, e, kind, table, cpu) in entries:
            overlap = (min(e, end) - max(s, start)).total_seconds()
            if kind == 'checkpoint':
                if start <= e <= end:
                    inside.append(f'checkpoint({table})')
                continue
            if overlap > 0:
                span = max((e - s).total_seconds(), 1e-3)
                share = cpu * min(1.0, overlap / span)
                vac_cpu += share
                inside.append(f'{kind} {table} {share:.2f}s')
        print(f'{run.parent.name:5} {name:34} {start:%H:%M:%S}-{end:%H:%M:%S} autovacuum CPU {vac_cpu:.2f} s; ' + ', '.join(inside))
