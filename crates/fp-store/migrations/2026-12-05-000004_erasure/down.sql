DROP TABLE erased_events;
DROP TABLE erasures;
DROP TRIGGER outbox_submission_event ON outbox;
DROP FUNCTION record_submission_event();
DROP TABLE submission_events;
