-- Endpoint health, reported by dispatchers over the broker and recorded by fp-api (the owner).
ALTER TABLE webhook_configs
    ADD COLUMN last_success_at timestamptz,
    -- Start of the current run of failures; NULL while the endpoint is healthy.
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN disabled_reason text;
