-- API keys carry a role, like dashboard users: a tenant admin's key is scoped to its tenant; a
-- superadmin key belongs to the platform (no tenant) and may only call the admin routes.
ALTER TABLE api_keys
    ALTER COLUMN tenant_id DROP NOT NULL,
    ADD COLUMN role text NOT NULL DEFAULT 'tenant_admin' CHECK (role IN ('tenant_admin', 'superadmin')),
    -- A label the tenant chose ("CI", "billing service"), so keys can be told apart and revoked.
    ADD COLUMN name text NOT NULL DEFAULT '',
    ADD CONSTRAINT api_keys_role_matches_tenant CHECK ((role = 'superadmin') = (tenant_id IS NULL));
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- The superadmin log view: every tenant, newest first, keyset-paged like the tenant view.
CREATE INDEX delivery_attempts_time ON delivery_attempts (attempted_at DESC, id DESC);
