-- Owned by fp-api. The zone a dashboard user reads times in (an IANA name such as `Europe/Berlin`,
-- checked by the api); NULL: not chosen, the dashboard takes it from the browser's language region.
-- The dashboard reads it through the api (`GET /api/v2/sessions/current`), not from this table: its
-- read-only role is granted nothing on `users`.
ALTER TABLE users ADD COLUMN time_zone text NULL;
