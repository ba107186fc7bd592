-- Secret rotation: when a tenant replaces its webhook secret, the replaced one (sealed like
-- `secret_sealed`, never plaintext) still signs deliveries, as a second `webhook-signature` entry,
-- until `previous_secret_expires_at`. Both are NULL when no rotation is in its grace period.
ALTER TABLE webhook_configs
    ADD COLUMN previous_secret_sealed bytea,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD CONSTRAINT webhook_configs_previous_secret_expires
        CHECK ((previous_secret_sealed IS NULL) = (previous_secret_expires_at IS NULL));
