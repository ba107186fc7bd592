-- Back to one unpartitioned table, rows copied: not online (the copy holds the locks), for
-- development only. One transaction of its own (the migration runs outside diesel's).
BEGIN;
CREATE TABLE delivery_attempts_unpartitioned (LIKE delivery_attempts INCLUDING DEFAULTS);
INSERT INTO delivery_attempts_unpartitioned SELECT * FROM delivery_attempts;
DROP TABLE delivery_attempts;
ALTER TABLE delivery_attempts_unpartitioned RENAME TO delivery_attempts;
ALTER TABLE delivery_attempts ADD PRIMARY KEY (id);
CREATE INDEX delivery_attempts_tenant_time ON delivery_attempts (tenant_id, attempted_at DESC, id DESC);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempt_number);
CREATE INDEX delivery_attempts_time ON delivery_attempts (attempted_at DESC, id DESC);
CREATE INDEX delivery_attempts_event ON delivery_attempts (event_id);
COMMIT;
