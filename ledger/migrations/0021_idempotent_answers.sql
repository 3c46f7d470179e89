-- Every answer given under an idempotency key is remembered, not only writes that appended:
-- a refusal (412, 404, 409, 422 …) and an answer that left its entries unchanged are kept
-- as ``answer`` ({"error": {type, message, code, field, extra}} or {"unchanged": [event
-- ids], "atomic": bool}), with no entry, version or position. The key's primary key then
-- decides between two writer processes deciding attempts of one key at once: whichever
-- records its row first is the answer, and the other, refused by the key, decides its
-- attempt again and finds that answer (ledger/writer.py).
ALTER TABLE idempotency_keys ADD COLUMN answer jsonb;
ALTER TABLE idempotency_keys ALTER COLUMN namespace DROP NOT NULL;
ALTER TABLE idempotency_keys ALTER COLUMN entry_key DROP NOT NULL;
ALTER TABLE idempotency_keys ALTER COLUMN version DROP NOT NULL;
ALTER TABLE idempotency_keys ALTER COLUMN position DROP NOT NULL;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_answer_or_write
    CHECK ((answer IS NULL) = (position IS NOT NULL));

-- Records answers that appended nothing, each unless its key is taken; returns the keys it
-- recorded. It runs as the schema's owner like ssot_append (0017): the service role has no
-- INSERT on idempotency_keys.
CREATE FUNCTION ssot_record_answers(p_answers json) RETURNS TABLE (actor text, key text)
LANGUAGE sql AS $fn$
    INSERT INTO idempotency_keys AS i (actor, key, request_hash, recorded_at, answer)
    SELECT a.actor, a.key, decode(a.request_hash, 'hex'), clock_timestamp(), a.answer
    FROM json_to_recordset(p_answers) AS a(actor text, key text, request_hash text,
        answer jsonb)
    ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING
    RETURNING i.actor, i.key
$fn$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ssot_record_answers(json)'
                   ' SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END;
$$;
REVOKE EXECUTE ON FUNCTION ssot_record_answers(json) FROM PUBLIC;
