INSERT INTO delivery_claims (delivery_id, claimed_at) VALUES (gen_random_uuid(), now()) ON CONFLICT DO NOTHING RETURNING delivery_id;
