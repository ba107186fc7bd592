-- The W3C tracestate beside each stored traceparent (the outbox row's, the attempt row's): vendors'
-- trace data from the caller goes on with the trace instead of ending at the database. Empty when
-- there is none, and for older rows.
ALTER TABLE outbox
    ADD COLUMN tracestate text NOT NULL DEFAULT '';
ALTER TABLE delivery_attempts
    ADD COLUMN tracestate text NOT NULL DEFAULT '';
