-- Owned by fp-api. Which notification emails (fp_domain::notification) a tenant's admins got for the
-- endpoint's current run of failures, so each goes out once however many api replicas there are:
-- a replica claims one by setting its column (a conditional UPDATE) before sending, and clears it
-- again if the send fails, for the next try.
ALTER TABLE webhook_configs
    -- The "failing" email of the run that began at failing_since; cleared with failing_since.
    ADD COLUMN failing_notified_at timestamptz,
    -- The "disabled" email; cleared when the config is saved again (which re-enables it).
    ADD COLUMN disabled_notified_at timestamptz;
-- Endpoints disabled before these emails existed are not announced now, possibly long after.
UPDATE webhook_configs SET disabled_notified_at = disabled_at WHERE disabled_at IS NOT NULL;
-- The notifier's look-ups: only endpoints with an email still to send.
CREATE INDEX webhook_configs_failing_unnotified ON webhook_configs (failing_since)
    WHERE failing_since IS NOT NULL AND failing_notified_at IS NULL;
CREATE INDEX webhook_configs_disabled_unnotified ON webhook_configs (disabled_at)
    WHERE disabled_at IS NOT NULL AND disabled_notified_at IS NULL;
