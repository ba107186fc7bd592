#!/usr/bin/env bash
# pg_stat_wal every 2 s (UTC ns, records, full-page images, bytes) until killed: what PostgreSQL's
# WAL carried per phase, beside a sitting.
out=$1
while true; do
  echo "$(date +%s%N) $(psql -X -A -t -F ' ' -h 127.0.0.1 -U postgres -d postgres -c 'select wal_records, wal_fpi, wal_bytes from pg_stat_wal')" >> "$out"
  sleep 2
done
