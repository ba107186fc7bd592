-- Events from other services' publishers (issue 16), written by fp-dispatcher.

-- Valid events nobody can receive because their tenant does not exist (never did, or was deleted
-- while the event waited): a publisher's mistake an operator should see. No tenant's log can show
-- them, so they are kept here, once per event, and pruned by the dispatchers after 30 days. No
-- payload is kept. The tenant id names no tenant (hence not `tenant_id`: tenant deletion has no
-- rows to delete here).
CREATE TABLE undeliverable_events (
    event_id uuid PRIMARY KEY,
    unknown_tenant_id uuid NOT NULL,
    event_type text NOT NULL,
    -- `unknown_tenant` (fp_domain::inbound_event::Undeliverable).
    reason text NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX undeliverable_events_recorded ON undeliverable_events (recorded_at);

-- The first attempt of each delivery (one event to one endpoint) claimed by a dispatcher, so that
-- the same event published twice is delivered once whichever dispatcher gets each copy. Kept for
-- fp_domain::inbound_event::DEDUP_WINDOW; rows arrive in time order, so a BRIN index finds the
-- old ones for pruning at almost no cost per insert.
CREATE TABLE delivery_claims (
    delivery_id uuid PRIMARY KEY,
    claimed_at timestamptz NOT NULL
);
CREATE INDEX delivery_claims_claimed ON delivery_claims USING brin (claimed_at);
