DROP TRIGGER api_key_deleted ON api_keys;
DROP TRIGGER api_key_revoked ON api_keys;
DROP FUNCTION notify_api_key_revoked();
