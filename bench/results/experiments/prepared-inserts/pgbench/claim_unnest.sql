INSERT INTO delivery_claims (delivery_id, claimed_at) SELECT delivery_id, now() FROM unnest(ARRAY[gen_random_uuid()]) AS claims (delivery_id) ON CONFLICT DO NOTHING RETURNING delivery_id;
