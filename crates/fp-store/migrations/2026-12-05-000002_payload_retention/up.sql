-- Per-tenant payload retention (issue 15): a tenant may keep request and response bodies and
-- headers for fewer days than the platform keeps delivery records (`retention.max_days`).

-- Owned by fp-api: the tenant's choice. No row: payloads live as long as their records.
CREATE TABLE payload_retention_settings (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
    -- The upper bound (`retention.max_days`) is configuration, so only the lower one is here.
    days integer NOT NULL CHECK (days >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Owned by fp-log-ingest: how far clearing has got per tenant. Every attempt of the tenant
-- attempted before `cleared_before` has had its payload cleared, so a run walks only the attempts
-- between this and its own cutoff, never the cleared rows behind it.
CREATE TABLE payload_clearing_progress (
    tenant_id uuid PRIMARY KEY,
    cleared_before timestamptz NOT NULL
);

-- When the payload was cleared and under how many days of retention: the log says "removed after
-- N days" rather than showing empty bodies as if the receiver had sent them. Nullable columns
-- without a default: no table rewrite, and on a partitioned table they reach every partition.
ALTER TABLE delivery_attempts
    ADD COLUMN payload_cleared_at timestamptz,
    ADD COLUMN payload_retention_days integer;
