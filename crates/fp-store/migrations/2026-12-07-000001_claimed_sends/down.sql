ALTER TABLE delivery_claims DROP COLUMN sent_attempt;
