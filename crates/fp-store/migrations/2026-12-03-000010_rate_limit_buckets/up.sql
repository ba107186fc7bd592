-- Owned by fp-api. Per-tenant rate limits of manual redelivery and test events, shared by every api
-- replica: one token bucket per tenant and action, its whole state the instant it is full again
-- (see fp_domain::rate_limit), changed by a compare-and-swap in one statement. A missing row is a
-- full bucket. The dashboard's read-only role is granted nothing here.
CREATE TABLE rate_limit_buckets (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    action text NOT NULL CHECK (action IN ('redelivery', 'bulk_redelivery', 'test_event')),
    full_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, action)
);
