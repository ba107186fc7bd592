#!/usr/bin/env bash
# every 2 s: dirty pages per file (cachestat), PostgreSQL's files named by relation
out=$1
for i in $(seq 1 45); do
  python3 /work/main/bench/results/experiments/stall-spans/early-runs/dirty-files.py /var/lib/postgresql /var/lib/rabbitmq /work/bench-runs > /tmp/dirty.now
  cat /tmp/dirty.now >> $out
  for db in $(psql -X -A -t -h 127.0.0.1 -U postgres -c "select oid||':'||datname from pg_database where datname like 'fp_bench%'"); do
    oid=${db%%:*}; name=${db#*:}
    nodes=$(grep -o "base/$oid/[0-9][0-9]*" /tmp/dirty.now | cut -d/ -f3 | paste -sd, -)
    [ -n "$nodes" ] && psql -X -A -t -h 127.0.0.1 -U postgres -d "$name" -c "select '    relfilenode '||relfilenode||' = '||relname from pg_class where relfilenode in ($nodes)" >> $out 2>&1
  done
  sleep 1.5
done
