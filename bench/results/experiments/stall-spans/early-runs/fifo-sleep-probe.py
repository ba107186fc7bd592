import time,sys
end=time.time()+float(sys.argv[1]); out=open(sys.argv[2],'w')
prev=time.perf_counter(); wall0=time.time(); p0=prev
while time.time()<end:
    time.sleep(0.001)
    now=time.perf_counter()
    if now-prev>0.004:
        out.write("%.3f %.1f\n"%(wall0+(prev-p0), (now-prev)*1e3))
    prev=now
out.close()
