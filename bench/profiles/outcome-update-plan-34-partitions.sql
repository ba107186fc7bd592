-- The outcome statement's plan over 34 day partitions (bench/README.md, "The plan over 34 partitions").
-- Run against a scratch database made with `fpctl migrate` and `fpctl maintenance run` (FP__RETENTION__DAYS_AHEAD=33).
\ir outcome-update-setup.sql
SET plan_cache_mode = force_generic_plan;
BEGIN;
EXPLAIN (ANALYZE, COSTS OFF, SUMMARY, TIMING OFF) EXECUTE outcome(:'ids', :'ats', :'evs', :'bodies', 'interrupted');
ROLLBACK;
SET plan_cache_mode = force_custom_plan;
BEGIN;
EXPLAIN (ANALYZE, COSTS OFF, SUMMARY, TIMING OFF) EXECUTE outcome(:'ids', :'ats', :'evs', :'bodies', 'interrupted');
ROLLBACK;
