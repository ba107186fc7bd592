-- The W3C traceparent of each attempt's record (a span of its event's trace), so a manual
-- redelivery joins the trace of the event it sends again. Empty for older rows.
ALTER TABLE delivery_attempts
    ADD COLUMN traceparent text NOT NULL DEFAULT '';
