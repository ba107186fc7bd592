-- Pruning (fp_store::erasure::prune_submission_events) finds the rows whose events' attempts are
-- all gone by the events' age, through this index, a batch at a time.
-- CONCURRENTLY, so a deployment with a large table keeps taking submissions (its trigger inserts
-- here) while it is built; it cannot run in a transaction (metadata.toml) and so must be the only
-- statement here.
CREATE INDEX CONCURRENTLY IF NOT EXISTS submission_events_created ON submission_events (created_at);
