DROP INDEX webhook_configs_disabled_unnotified;
DROP INDEX webhook_configs_failing_unnotified;
ALTER TABLE webhook_configs
    DROP COLUMN failing_notified_at,
    DROP COLUMN disabled_notified_at;
