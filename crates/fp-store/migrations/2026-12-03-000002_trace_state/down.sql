ALTER TABLE delivery_attempts DROP COLUMN tracestate;
ALTER TABLE outbox DROP COLUMN tracestate;
