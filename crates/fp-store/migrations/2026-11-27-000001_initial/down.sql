DROP TABLE delivery_attempts;
DROP TABLE outbox;
DROP TABLE submissions;
DROP TABLE webhook_configs;
DROP TABLE users;
DROP TABLE api_keys;
DROP TABLE tenants;
