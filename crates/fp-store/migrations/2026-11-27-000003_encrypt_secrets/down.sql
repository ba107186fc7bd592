-- Sealed secrets cannot be opened in SQL: going back loses them (tenants save them again).
ALTER TABLE webhook_configs
    DROP COLUMN secret_sealed,
    ADD COLUMN secret text;
