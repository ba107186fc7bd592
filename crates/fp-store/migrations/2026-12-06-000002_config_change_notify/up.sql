-- Every dispatcher caches each tenant's delivery config (issue 17). This tells all of them at once
-- that a tenant's entry changed, on the channel `fp_tenant_config_changed`
-- (fp_store::config_changes::CHANNEL), with the tenant's id as payload. Triggers cover every
-- writer (the api, fpctl, an operator's SQL). NOTIFY is delivered at commit, once per payload and
-- transaction: a rolled-back change notifies nobody.
CREATE FUNCTION notify_tenant_config_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV[0] names the column that holds the tenant's id.
    PERFORM pg_notify(
        'fp_tenant_config_changed',
        CASE TG_OP WHEN 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END ->> TG_ARGV[0]
    );
    RETURN NULL;
END;
$$;

-- A config saved or deleted. Updates of the endpoint's health columns alone (written on every
-- health report) leave out what the dispatcher reads, so they notify nobody.
CREATE TRIGGER webhook_config_saved AFTER INSERT OR DELETE ON webhook_configs
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_config_changed('tenant_id');
CREATE TRIGGER webhook_config_changed AFTER UPDATE ON webhook_configs
    FOR EACH ROW WHEN (
        (OLD.url, OLD.events, OLD.secret_sealed, OLD.previous_secret_sealed,
         OLD.previous_secret_expires_at, OLD.enabled)
        IS DISTINCT FROM
        (NEW.url, NEW.events, NEW.secret_sealed, NEW.previous_secret_sealed,
         NEW.previous_secret_expires_at, NEW.enabled)
    )
    EXECUTE FUNCTION notify_tenant_config_changed('tenant_id');

-- A tenant created (the dispatcher may have cached its id as unknown) or deleted.
CREATE TRIGGER tenant_created_or_deleted AFTER INSERT OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_config_changed('id');

-- An erasure: the dispatcher keeps each tenant's latest erasure time to know which deliveries to
-- look up in erased_events.
CREATE TRIGGER erasure_recorded AFTER INSERT ON erasures
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_config_changed('tenant_id');
