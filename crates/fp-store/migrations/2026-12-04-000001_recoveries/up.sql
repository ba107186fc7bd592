-- Owned by fp-api. One bulk recovery of failed deliveries (`POST /api/v2/webhooks/logs/redeliver`):
-- the range it covered, when it was asked for, and the deliveries it queued, so its progress can be
-- told from the manual attempts logged since (`GET /api/v2/webhooks/recoveries/{id}`, the
-- dashboard's progress page). The dashboard's read-only role reads these columns
-- (fp_store::DASHBOARD_READABLE_COLUMNS, granted by `fpctl migrate`).
CREATE TABLE recoveries (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The range `[range_from, range_to)` of the call.
    range_from timestamptz NOT NULL,
    range_to timestamptz NOT NULL,
    -- Taken before the first job was published: the manual attempts at or after it are the
    -- recovery's.
    requested_at timestamptz NOT NULL,
    -- The deliveries queued again, oldest first.
    delivery_ids uuid[] NOT NULL,
    -- Failed deliveries of the range left out because the endpoint's format changed since.
    skipped_format_changed bigint NOT NULL,
    -- More failed deliveries of the range were left for another call.
    more boolean NOT NULL,
    CHECK (range_from < range_to)
);
CREATE INDEX recoveries_tenant ON recoveries (tenant_id, requested_at);
