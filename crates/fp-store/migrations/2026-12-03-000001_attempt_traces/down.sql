ALTER TABLE delivery_attempts DROP COLUMN traceparent;
