DROP INDEX delivery_attempts_time;
DROP INDEX api_keys_tenant;
DELETE FROM api_keys WHERE tenant_id IS NULL;
ALTER TABLE api_keys
    DROP CONSTRAINT api_keys_role_matches_tenant,
    DROP COLUMN name,
    DROP COLUMN role,
    ALTER COLUMN tenant_id SET NOT NULL;
