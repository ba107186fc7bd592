-- delivery_attempts becomes range-partitioned by attempted_at (issue 15): retention drops whole
-- partitions instead of deleting rows, and each partition's indexes stay small. fp-log-ingest
-- makes the partitions ahead of time (fp_store::partitions) and drops those past retention.
--
-- Online on a deployment with rows: the existing table is not copied but becomes the first
-- partition, `delivery_attempts_legacy`, covering (MINVALUE, boundary). Diesel runs a migration
-- as one string, in one transaction by default; here that would hold the rename's ACCESS
-- EXCLUSIVE lock through the validation scan of every old row, so this migration runs outside
-- diesel's transaction (metadata.toml) and commits in steps:
--   1. a CHECK (attempted_at < boundary) NOT VALID: a brief lock, no scan;
--   2. VALIDATE it: a full scan, but under SHARE UPDATE EXCLUSIVE, so reads and inserts go on;
--   3. the unique index (id, attempted_at) the partitioned table needs on every partition.
--      `fpctl migrate` builds it CONCURRENTLY before this runs (fp_store::run_migrations: a
--      CONCURRENTLY build cannot run inside a migration string); it is built here, blocking
--      writes but not reads, only when another tool runs the migration;
--   4. one short transaction: rename, create the partitioned table and its indexes, attach the
--      old table. ATTACH skips its scan thanks to the validated constraint and adopts the old
--      table's identical indexes instead of building them.
-- A log-ingest of the previous release (ON CONFLICT (id)) cannot insert into the new table: its
-- batches wait in the queue, retried, until the new release replaces it. Readers are unaffected.
-- Each step can run again after a failure of a later one. Steps 1 and 4 wait at most 10 s for
-- their lock rather than queue every reader behind them.
--
-- The boundary is the start of the day after tomorrow (UTC), or later if rows already go beyond:
-- the old table keeps taking today's inserts while step 2 scans, and a boundary at midnight
-- would refuse them if the scan ran past it.

BEGIN;
SET LOCAL lock_timeout = '10s';
DO $$
DECLARE
    boundary timestamptz := greatest(
        (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '2 days') AT TIME ZONE 'UTC',
        (SELECT (date_trunc('day', max(attempted_at) AT TIME ZONE 'UTC') + interval '1 day')
                AT TIME ZONE 'UTC'
           FROM delivery_attempts));
BEGIN
    ALTER TABLE delivery_attempts DROP CONSTRAINT IF EXISTS delivery_attempts_legacy_bound;
    EXECUTE format(
        'ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_legacy_bound '
        'CHECK (attempted_at < %L) NOT VALID', boundary);
    -- For step 4, in this session (is_local false: it outlives the transaction).
    PERFORM set_config('fp.legacy_attempts_boundary', boundary::text, false);
END $$;
COMMIT;

BEGIN;
ALTER TABLE delivery_attempts VALIDATE CONSTRAINT delivery_attempts_legacy_bound;
COMMIT;

BEGIN;
CREATE UNIQUE INDEX IF NOT EXISTS delivery_attempts_legacy_id_attempted_at
    ON delivery_attempts (id, attempted_at);
COMMIT;

BEGIN;
SET LOCAL lock_timeout = '10s';
ALTER TABLE delivery_attempts RENAME TO delivery_attempts_legacy;
ALTER TABLE delivery_attempts_legacy RENAME CONSTRAINT delivery_attempts_pkey TO delivery_attempts_legacy_pkey;
ALTER INDEX delivery_attempts_tenant_time RENAME TO delivery_attempts_legacy_tenant_time;
ALTER INDEX delivery_attempts_delivery RENAME TO delivery_attempts_legacy_delivery;
ALTER INDEX delivery_attempts_time RENAME TO delivery_attempts_legacy_time;
ALTER INDEX delivery_attempts_event RENAME TO delivery_attempts_legacy_event;

-- The same columns, in the same order, as the old table.
CREATE TABLE delivery_attempts (
    id uuid NOT NULL,
    delivery_id uuid NOT NULL,
    event_id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    event_type text NOT NULL,
    url text NOT NULL,
    attempt_number integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    duration_ms bigint NOT NULL,
    request_headers jsonb NOT NULL,
    request_body bytea NOT NULL,
    response_status integer,
    response_headers jsonb NOT NULL,
    response_body bytea NOT NULL,
    response_truncated boolean NOT NULL,
    error_kind text,
    error_message text,
    final boolean NOT NULL,
    next_retry_at timestamptz,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    manual boolean NOT NULL DEFAULT false,
    traceparent text NOT NULL DEFAULT '',
    tracestate text NOT NULL DEFAULT ''
) PARTITION BY RANGE (attempted_at);

-- A unique index must hold the partition key. Every copy of an attempt record (pending, outcome,
-- a broker redelivery) carries its attempt's one attempted_at, so (id, attempted_at) still makes
-- one row per attempt (log-ingest's ON CONFLICT). A plain unique index, not a primary key: ATTACH
-- adopts a partition's index for a key constraint only if the partition has that constraint too.
CREATE UNIQUE INDEX delivery_attempts_id_attempted_at ON delivery_attempts (id, attempted_at);
-- The indexes the log pages walk (initial, 2026-11-27-000004, 2026-12-04-000002), on every partition.
CREATE INDEX delivery_attempts_tenant_time ON delivery_attempts (tenant_id, attempted_at DESC, id DESC);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempt_number);
CREATE INDEX delivery_attempts_time ON delivery_attempts (attempted_at DESC, id DESC);
CREATE INDEX delivery_attempts_event ON delivery_attempts (event_id);

-- An empty old table (a new deployment) is dropped rather than kept as a partition: every day
-- then has a partition of its own. No insert can slip in between: the rename holds its lock.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM delivery_attempts_legacy) THEN
        EXECUTE format(
            'ALTER TABLE delivery_attempts ATTACH PARTITION delivery_attempts_legacy '
            'FOR VALUES FROM (MINVALUE) TO (%L)',
            current_setting('fp.legacy_attempts_boundary')::timestamptz);
    ELSE
        DROP TABLE delivery_attempts_legacy;
    END IF;
END $$;
COMMIT;
