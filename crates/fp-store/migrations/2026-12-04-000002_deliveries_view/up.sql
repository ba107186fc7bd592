-- The deliveries view (one row per delivery, fp_store::deliveries) searches by event id and by
-- submission id. The outbox row of an event now names its submission (NULL for test events and
-- for events recorded before this migration, whose submission is only in the encoded payload),
-- and is found by it; an event's attempts are found by its id.
ALTER TABLE outbox
    ADD COLUMN submission_id bigint;
CREATE INDEX outbox_submission ON outbox (tenant_id, submission_id)
    WHERE submission_id IS NOT NULL;
CREATE INDEX delivery_attempts_event ON delivery_attempts (event_id);
