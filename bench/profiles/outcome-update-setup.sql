-- What bench/profiles/outcome-update-plan-34-partitions.sql and outcome-update-timing.sh run first:
-- 20 pending rows of today, a statement of the dispatcher's outcome's shape prepared as `outcome`,
-- and the rows' columns as arrays in psql variables (:ids, :ats, :evs, :bodies).
\set QUIET on
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'explain');
INSERT INTO delivery_attempts (id, delivery_id, event_id, tenant_id, event_type, url, attempt_number, attempted_at, duration_ms, request_headers, request_body, response_status, response_headers, response_body, response_truncated, error_kind, error_message, final, next_retry_at, manual, traceparent, tracestate)
SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 'submission.created', 'https://x.example/h', 1, now() - (g || ' ms')::interval, 0, '[]', 'body', NULL, '[]', '', false, 'interrupted', 'pending', false, NULL, false, '', ''
FROM generate_series(1, 20) g;
PREPARE outcome(uuid[], timestamptz[], uuid[], bytea[], text) AS
UPDATE delivery_attempts AS stored SET (response_status, error_kind, error_message, final, ingested_at) = (200, NULL, NULL, true, now())
FROM unnest($1, $2, $3, $4) AS outcome (id, attempted_at, event_id, request_body)
WHERE stored.id = outcome.id AND stored.attempted_at = outcome.attempted_at
  AND NOT EXISTS (SELECT 1 FROM erased_events WHERE erased_events.event_id = outcome.event_id)
  AND stored.request_body = outcome.request_body AND stored.error_kind = $5
RETURNING stored.id;
CREATE TEMP TABLE batch AS SELECT array_agg(id) ids, array_agg(attempted_at) ats, array_agg(event_id) evs, array_agg(request_body) bodies FROM delivery_attempts;
SELECT ids::text AS ids, ats::text AS ats, evs::text AS evs, bodies::text AS bodies FROM batch \gset
\set QUIET off
