ALTER TABLE delivery_attempts
    DROP COLUMN payload_retention_days,
    DROP COLUMN payload_cleared_at;
DROP TABLE payload_clearing_progress;
DROP TABLE payload_retention_settings;
