ALTER TABLE webhook_configs
    DROP COLUMN last_success_at,
    DROP COLUMN failing_since,
    DROP COLUMN disabled_at,
    DROP COLUMN disabled_reason;
