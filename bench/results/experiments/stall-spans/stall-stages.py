"""Stages of the submissions whose api request started in a stall (2026-12-06 only).

Usage: stall-stages.py <spans.jsonl> <from HH:MM:SS.mmm UTC> <to HH:MM:SS.mmm UTC>
"""
import datetime
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
from span_breakdown import load_spans, stages_of

if len(sys.argv) != 4:
    sys.exit(__doc__)
spans,children=load_spans(sys.argv[1])
def parse(t):
    h,m,s=t.split(':'); d=datetime.datetime(2026,12,6,int(h),int(m),tzinfo=datetime.timezone.utc).timestamp()
    return int((d+float(s))*1e9)
lo,hi=parse(sys.argv[2]),parse(sys.argv[3])
rows=[]
for sp in spans.values():
    if sp["service"]=="fp-dispatcher" and sp["name"].startswith("process "):
        st=stages_of(sp,spans,children)
        if not st or "api request" not in st: continue
        relay=spans[sp["parent"]]; req=spans[relay["parent"]]
        if lo-100e6<=req["start"]<=hi: rows.append((req["start"],st))
rows.sort()
keys=["api request","request end -> relay publish","relay publish -> consumed","consumed -> record handed over","record handed over -> POST","POST"]
print("start        "+" | ".join(k[:14] for k in keys))
for t,st in rows[::max(1,len(rows)//40)]:
    print(datetime.datetime.utcfromtimestamp(t/1e9).strftime("%S.%f")[:-3], " | ".join("%14.1f"%st[k] for k in keys))
