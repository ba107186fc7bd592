import time,sys
out=open(sys.argv[1],'w'); end=time.time()+float(sys.argv[2])
keys=('nr_dirty','nr_writeback','pgpgout')
while time.time()<end:
    v={}
    for line in open('/proc/vmstat'):
        k,_,n=line.partition(' ')
        if k in keys: v[k]=n.strip()
    out.write(f"{time.time_ns()} {v['nr_dirty']} {v['nr_writeback']} {v['pgpgout']}\n")
    time.sleep(0.02)
