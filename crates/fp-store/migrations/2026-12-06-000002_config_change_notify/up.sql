-- Every dispatcher caches each tenant's delivery config (issue 17). This tells all of them at once
-- that a tenant's entry changed, on the channel `fp_tenant_config_changed`
-- (fp_store::config_changes::CHANNEL), with the tenant's id as payload, or an empty payload when
-- any tenant's may have (a TRUNCATE). Triggers cover every writer (the api, fpctl, an operator's
-- SQL) that runs triggers: not a session with `session_replication_role = replica`. NOTIFY is delivered at commit, once per payload and transaction: a rolled-back change
-- notifies nobody.
CREATE FUNCTION notify_tenant_config_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV[0] names the column that holds the tenant's id; an update may move a row from one
    -- tenant to another, so both are told.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('fp_tenant_config_changed', to_jsonb(OLD) ->> TG_ARGV[0]);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('fp_tenant_config_changed', to_jsonb(NEW) ->> TG_ARGV[0]);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION notify_every_tenant_config_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fp_tenant_config_changed', '');
    RETURN NULL;
END;
$$;

-- A config saved or deleted. Updates of the endpoint's health columns alone (written on every
-- health report) leave out what the dispatcher reads, so they notify nobody.
CREATE TRIGGER webhook_config_saved AFTER INSERT OR DELETE ON webhook_configs
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_config_changed('tenant_id');
CREATE TRIGGER webhook_config_changed AFTER UPDATE ON webhook_configs
    FOR EACH ROW WHEN (
        (OLD.tenant_id, OLD.url, OLD.events, OLD.secret_sealed, OLD.previous_secret_sealed,
         OLD.previous_secret_expires_at, OLD.enabled)
        IS DISTINCT FROM
        (NEW.tenant_id, NEW.url, NEW.events, NEW.secret_sealed, NEW.previous_secret_sealed,
         NEW.previous_secret_expires_at, NEW.enabled)
    )
    EXECUTE FUNCTION notify_tenant_config_changed('tenant_id');

-- A tenant created (the dispatcher may have cached its id as unknown), deleted or renumbered.
CREATE TRIGGER tenant_changed AFTER INSERT OR DELETE OR UPDATE OF id ON tenants
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_config_changed('id');

-- An erasure: the dispatcher keeps each tenant's latest erasure time to know which deliveries to
-- look up in erased_events.
CREATE TRIGGER erasures_changed AFTER INSERT OR UPDATE OR DELETE ON erasures
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_config_changed('tenant_id');

-- A TRUNCATE runs no row trigger.
CREATE TRIGGER webhook_configs_truncated AFTER TRUNCATE ON webhook_configs
    FOR EACH STATEMENT EXECUTE FUNCTION notify_every_tenant_config_changed();
CREATE TRIGGER tenants_truncated AFTER TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION notify_every_tenant_config_changed();
CREATE TRIGGER erasures_truncated AFTER TRUNCATE ON erasures
    FOR EACH STATEMENT EXECUTE FUNCTION notify_every_tenant_config_changed();
