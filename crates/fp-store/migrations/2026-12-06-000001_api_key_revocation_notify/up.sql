-- Every api instance keeps live API keys in an in-process cache (issue 17). This tells all of them
-- at once that a key stopped being live, on the channel `fp_api_key_revoked`
-- (fp_store::key_revocations::CHANNEL), with the hex of the key's hash as payload. Whoever revokes
-- (the api, fpctl, an operator's SQL, a tenant deletion) is covered, as it is a trigger. NOTIFY is
-- delivered at commit: a rolled-back revocation notifies nobody.
CREATE FUNCTION notify_api_key_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fp_api_key_revoked', encode(OLD.key_hash, 'hex'));
    RETURN NULL;
END;
$$;

-- A live key revoked, or changed in what a cached entry holds (its hash, its owner, its role).
CREATE TRIGGER api_key_revoked AFTER UPDATE ON api_keys
    FOR EACH ROW WHEN (
        OLD.revoked_at IS NULL AND (
            NEW.revoked_at IS NOT NULL
            OR (NEW.key_hash, NEW.tenant_id, NEW.role) IS DISTINCT FROM (OLD.key_hash, OLD.tenant_id, OLD.role)
        )
    )
    EXECUTE FUNCTION notify_api_key_revoked();

-- Deleting a tenant deletes its keys.
CREATE TRIGGER api_key_deleted AFTER DELETE ON api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL)
    EXECUTE FUNCTION notify_api_key_revoked();
