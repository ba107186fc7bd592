DROP TRIGGER erasures_truncated ON erasures;
DROP TRIGGER tenants_truncated ON tenants;
DROP TRIGGER webhook_configs_truncated ON webhook_configs;
DROP TRIGGER erasures_changed ON erasures;
DROP TRIGGER tenant_changed ON tenants;
DROP TRIGGER webhook_config_changed ON webhook_configs;
DROP TRIGGER webhook_config_saved ON webhook_configs;
DROP FUNCTION notify_every_tenant_config_changed();
DROP FUNCTION notify_tenant_config_changed();
