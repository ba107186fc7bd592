-- Going back ends every grace period at once: deliveries are signed with the current secret only.
ALTER TABLE webhook_configs
    DROP CONSTRAINT webhook_configs_previous_secret_expires,
    DROP COLUMN previous_secret_expires_at,
    DROP COLUMN previous_secret_sealed;
