-- The newest attempt of the delivery whose send is taken: 1 for a fresh event's first attempt
-- claimed as it is sent, 0 for one claimed as it is parked at the endpoint's cap or the host's
-- rate, N once a copy (the parked copy, an input handed out again or handed back) has taken the
-- send of attempt N. A copy takes it by raising this column, in the statement that stores its
-- pending row, so of two copies of one attempt only one sends and the other finds the first's
-- pending row. Claims made before this column count as sent (1): a copy of one of those loses
-- the take, then waits for the attempt's outcome in the log, and is sent if none comes, as
-- copies were before.
ALTER TABLE delivery_claims ADD COLUMN sent_attempt integer NOT NULL DEFAULT 1;
ALTER TABLE delivery_claims ALTER COLUMN sent_attempt DROP DEFAULT;
