-- Owned by fp-api: tenants, api_keys, users, webhook_configs, submissions, outbox.
-- Owned by fp-log-ingest: delivery_attempts.
-- A service never writes a table another service owns (ARCHITECTURE.md).

CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    -- SHA-256 of the whole key: keys are 256-bit random, so a fast hash is enough.
    key_hash bytea NOT NULL UNIQUE,
    -- The first characters, so a key can be recognised in lists without being usable.
    key_prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE users (
    id uuid PRIMARY KEY,
    -- NULL for superadmins, who belong to the platform rather than a tenant.
    tenant_id uuid REFERENCES tenants (id),
    email text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('tenant_admin', 'superadmin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'superadmin') = (tenant_id IS NULL))
);

CREATE TABLE webhook_configs (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
    url text NOT NULL,
    events text[] NOT NULL,
    secret text,
    enabled boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE submissions (
    id bigserial PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    campaign_id bigint NOT NULL,
    star_rating integer NOT NULL CHECK (star_rating BETWEEN 1 AND 5),
    text_feedback text NOT NULL,
    customer_name text,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX submissions_tenant ON submissions (tenant_id, id);

-- Transactional outbox: written in the same transaction as the change it announces, published to
-- RabbitMQ by the api's relay, then marked.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    tenant_id uuid NOT NULL,
    event_type text NOT NULL,
    payload bytea NOT NULL,
    traceparent text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE delivery_attempts (
    id uuid PRIMARY KEY,
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
    ingested_at timestamptz NOT NULL DEFAULT now()
);
-- Tenant log pages: newest first, keyset-paged by (attempted_at, id).
CREATE INDEX delivery_attempts_tenant_time ON delivery_attempts (tenant_id, attempted_at DESC, id DESC);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempt_number);
