-- Erasure of a submission's personal data (GDPR Art. 17, issue 15), owned by fp-api.

-- Which events are about which submission, kept for as long as the submission's delivery records
-- may hold its data: outbox rows are pruned after a grace period, delivery attempts live much
-- longer, and only the outbox row of an event names its submission. A trigger keeps it, so every
-- writer of the outbox (the api, fpctl, the bench's seeding) records it in the same transaction.
CREATE TABLE submission_events (
    event_id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    submission_id bigint NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX submission_events_submission ON submission_events (tenant_id, submission_id);

CREATE FUNCTION record_submission_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO submission_events (event_id, tenant_id, submission_id, created_at)
    VALUES (NEW.event_id, NEW.tenant_id, NEW.submission_id, NEW.created_at)
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_submission_event AFTER INSERT ON outbox
    FOR EACH ROW WHEN (NEW.submission_id IS NOT NULL)
    EXECUTE FUNCTION record_submission_event();

-- Events recorded before this migration (those from before the outbox named submissions stay
-- unknown: their submission is only inside their encoded payload).
INSERT INTO submission_events (event_id, tenant_id, submission_id, created_at)
SELECT event_id, tenant_id, submission_id, created_at FROM outbox WHERE submission_id IS NOT NULL
ON CONFLICT (event_id) DO NOTHING;

-- The audit record of one erasure request: who asked, when, which fields changed and how many rows
-- of each table were rewritten. Never the erased data itself.
CREATE TABLE erasures (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    submission_id bigint NOT NULL,
    -- Exactly one of the two: the API key, or the dashboard user, that asked.
    requested_by_api_key uuid,
    requested_by_user uuid,
    erased_at timestamptz NOT NULL,
    -- Names of the submission's fields that held data and now hold the marker.
    erased_fields text[] NOT NULL,
    submission_rows integer NOT NULL,
    outbox_rows integer NOT NULL,
    delivery_attempts integer NOT NULL,
    erased_events integer NOT NULL,
    cancelled_deliveries integer NOT NULL,
    CHECK ((requested_by_api_key IS NULL) <> (requested_by_user IS NULL))
);
-- The dispatcher's config cache reads a tenant's latest erasure with each refresh.
CREATE INDEX erasures_tenant_time ON erasures (tenant_id, erased_at DESC);
CREATE INDEX erasures_submission ON erasures (tenant_id, submission_id, erased_at);

-- Events whose personal data was erased: the dispatcher sends none of their deliveries again
-- (first attempt, retry or redelivery) and records each as cancelled instead.
CREATE TABLE erased_events (
    event_id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    erasure_id uuid NOT NULL REFERENCES erasures (id),
    erased_at timestamptz NOT NULL
);
