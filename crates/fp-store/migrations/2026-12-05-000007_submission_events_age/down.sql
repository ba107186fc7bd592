DROP INDEX CONCURRENTLY IF EXISTS submission_events_created;
