-- Pruning (fp_store::outbox::prune_published) finds published rows by publication time through
-- this index, which holds published rows only; the relay keeps walking `outbox_unpublished`.
-- CONCURRENTLY, so a deployment with a large outbox keeps taking submissions while it is built; it
-- cannot run in a transaction (metadata.toml) and so must be the only statement here.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_published ON outbox (published_at)
    WHERE published_at IS NOT NULL;
