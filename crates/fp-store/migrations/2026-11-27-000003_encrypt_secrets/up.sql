-- Webhook secrets are sealed at rest with AES-256-GCM under `secrets.master_key`
-- (FP__SECRETS__MASTER_KEY): version byte || 12-byte nonce || ciphertext || tag, with the tenant id
-- as associated data. SQL has no key, so plaintext secrets saved before this migration cannot be
-- sealed here: they are dropped, and those configs deliver unsigned until their secret is saved
-- again through `PUT /api/v2/webhooks/config`.
ALTER TABLE webhook_configs
    DROP COLUMN secret,
    ADD COLUMN secret_sealed bytea;
