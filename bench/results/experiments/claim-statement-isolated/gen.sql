SELECT array_agg(d) AS d, array_agg(0+1) AS s, array_agg(gen_random_uuid()) AS id, array_agg(e) AS e, array_agg(t) AS t,
 array_agg('feedback.created'::text) AS et, array_agg('https://127.0.0.1:4443/hook/'||t::text) AS url, array_agg(1) AS an,
 array_agg(now()) AS at, array_agg(0::bigint) AS dur, array_agg('{"content-type":"application/json","webhook-id":"x","webhook-signature":"v1,abcdefabcdefabcdefabcdefabcdef"}'::jsonb) AS rh,
 array_agg(convert_to(repeat('{"a":"feedback body text"}',12),'UTF8')) AS rb, array_agg(NULL::int) AS rs, array_agg('{}'::jsonb) AS rsh, array_agg(''::bytea) AS rsb,
 array_agg(false) AS tr, array_agg('interrupted'::text) AS ek, array_agg('the attempt was interrupted'::text) AS em, array_agg(false) AS fin, array_agg(NULL::timestamptz) AS nr,
 array_agg(false) AS man, array_agg('00-'||md5(random()::text)||'-0123456789abcdef-01') AS tp, array_agg(''::text) AS ts
FROM (SELECT gen_random_uuid() AS d, gen_random_uuid() AS e, (SELECT id FROM tenants OFFSET floor(random()*1000)::int + 0*g LIMIT 1) AS t, g FROM generate_series(1, :n) g) x \gset
