-- Manual redeliveries: an attempt the tenant asked for (`POST /api/v2/webhooks/logs/{id}/redeliver`)
-- rather than one the retry schedule made. Earlier attempts were all automatic.
ALTER TABLE delivery_attempts
    ADD COLUMN manual boolean NOT NULL DEFAULT false;
