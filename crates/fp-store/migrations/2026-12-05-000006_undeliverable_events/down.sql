DROP TABLE delivery_claims;
DROP TABLE undeliverable_events;
