import os,time,sys,collections
end=time.time()+float(sys.argv[1]); out=open(sys.argv[2],'w')
def snap():
    d=collections.Counter()
    for pid in os.listdir('/proc'):
        if not pid.isdigit(): continue
        try:
            comm=open(f'/proc/{pid}/comm').read().strip()
            if comm.startswith('kworker'): comm='kworker'
            for line in open(f'/proc/{pid}/io'):
                if line.startswith('write_bytes'): d[comm]+=int(line.split()[1])
        except Exception: pass
    return d
def mem():
    m={}
    for line in open('/proc/meminfo'):
        k,v=line.split(':'); m[k]=int(v.split()[0])
    return m['Dirty']//1024, m['Writeback']//1024
prev=snap()
while time.time()<end:
    time.sleep(1)
    cur=snap(); d,w=mem()
    parts=" ".join("%s=%.0f"%(k,(v-prev.get(k,0))/1e6) for k,v in sorted(cur.items()) if v-prev.get(k,0)>500_000)
    out.write(time.strftime("%H:%M:%S")+f" dirty={d}MB wb={w}MB {parts}\n"); out.flush()
    prev=cur
out.close()
