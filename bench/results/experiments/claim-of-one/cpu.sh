#!/usr/bin/env bash
# PostgreSQL's CPU per first-attempt claim with its pending row, one claim per statement (as at the
# paced rates), for three statement shapes: batched-statement.sql (the claim writer's statement,
# arrays through unnest, four CTEs), one-claim-statement.sql (the same work for one claim, scalar
# values) and batched-inlined.sql (the batched statement with the pending rows' CTE inlined and the
# tenant locked per row). One pgbench client each, 3 rounds in turn; the backend's own CPU ticks over
# 6 s of each run, divided by the transactions committed meanwhile.
# Set-up: a scratch database made by `fpctl setup-database` and `fpctl migrate` (fp_claimbench), one
# tenant (`fpctl tenant create`, its id in the scripts), and one partition of delivery_attempts
# covering the run's days (fillfactor 70, as the day partitions are made).
U=postgres://postgres@127.0.0.1:5432/fp_claimbench
ticks() { read -a s < /proc/$1/stat; echo $((s[13] + s[14])); }
commits() { psql -Atc "select xact_commit from pg_stat_database where datname='fp_claimbench'" $U; }
for round in 1 2 3; do for v in batched-statement one-claim-statement batched-inlined; do
  /usr/lib/postgresql/15/bin/pgbench -n -M prepared -c 1 -T 9 -f $v.sql postgres://fp_app@127.0.0.1:5432/fp_claimbench > /dev/null 2>&1 &
  sleep 1.5
  pid=$(psql -Atc "select pid from pg_stat_activity where application_name='pgbench'" $U)
  t0=$(ticks $pid); c0=$(commits); sleep 6; t1=$(ticks $pid); c1=$(commits)
  wait
  python3 -c "print('$v$round', 'backend CPU ms per claim', round(($t1-$t0)*10/($c1-$c0), 4), 'claims/s', ($c1-$c0)/6)"
done; done
