-- ssot_append (as of 0024) without the work a commit did in vain, twice over:
--
-- - The NOTIFY's payload was aggregated for every batch and only then dropped when the
--   batch's states came to 3,000 bytes or more (HAVING filters after the aggregate has
--   run), so a batch of twenty events escaped every document into JSON text for nothing.
--   A CASE now asks the states' size first and builds the payload only when it can be
--   carried.
-- - The payload was built twice. PostgreSQL inlines a CTE that is referenced once, and
--   the notification names the payload twice (its length, then itself): EXPLAIN showed
--   the aggregate as two InitPlans. The CTE is now MATERIALIZED: built once.
--
-- What is notified is unchanged, byte for byte. The rest of the function is 0024's
-- (CREATE OR REPLACE restates it whole). docs/performance.md, "PostgreSQL's share of a
-- write".
CREATE OR REPLACE FUNCTION ssot_append(
    p_events stored_event_uuid[],
    p_history json,
    p_idempotency json,
    p_lock_timeout text
) RETURNS TABLE (
    originator_id uuid,
    originator_version bigint,
    notification_id bigint,
    recorded_at timestamptz
) LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    LOCK TABLE ssot_events IN EXCLUSIVE MODE;
    RETURN QUERY
    WITH r AS MATERIALIZED (
        SELECT * FROM json_to_recordset(p_history) AS r(stream_id uuid, namespace text,
            key text, version bigint, event_type text, event_id uuid, actor text,
            reason text, correlation_id text, causation_id text, idempotency_key text,
            patch json, document json, resolution json, prev_hash text, hash text,
            auth jsonb, traceparent text, tracestate text)
    ), ev AS (
        INSERT INTO ssot_events AS t (originator_id, originator_version, topic, state,
            traceparent, tracestate)
        SELECT e.originator_id, e.originator_version, e.topic, e.state, r.traceparent,
            r.tracestate
        FROM unnest(p_events) WITH ORDINALITY AS e(originator_id, originator_version,
            topic, state, n)
        LEFT JOIN r ON r.stream_id = e.originator_id AND r.version = e.originator_version
        ORDER BY e.n
        RETURNING t.originator_id, t.originator_version, t.notification_id, t.recorded_at,
            t.topic, t.state, t.traceparent, t.tracestate
    ), h AS (
        INSERT INTO entry_history AS x (namespace, key, version, position, recorded_at,
            event_type, event_id, actor, reason, correlation_id, causation_id,
            idempotency_key, patch, document, resolution, prev_hash, hash, auth)
        SELECT r.namespace, r.key, r.version, ev.notification_id, ev.recorded_at,
            r.event_type, r.event_id, r.actor, r.reason, r.correlation_id, r.causation_id,
            r.idempotency_key, r.patch, r.document, r.resolution, r.prev_hash, r.hash, r.auth
        FROM r JOIN ev ON ev.originator_id = r.stream_id AND ev.originator_version = r.version
        RETURNING x.namespace, x.key, x.version, x.position, x.recorded_at, x.document,
            x.event_type, x.hash, x.event_id, x.actor, x.reason, x.correlation_id,
            x.causation_id, x.patch, x.resolution, x.auth
    ), c AS (
        INSERT INTO entries AS e (namespace, key, version, position, recorded_at, document,
            deleted, hash)
        SELECT DISTINCT ON (h.namespace, h.key) h.namespace, h.key, h.version, h.position,
            h.recorded_at, h.document, h.event_type = 'entry.deleted', h.hash
        FROM h ORDER BY h.namespace, h.key, h.version DESC
        ON CONFLICT (namespace, key) DO UPDATE SET version = EXCLUDED.version,
            position = EXCLUDED.position, recorded_at = EXCLUDED.recorded_at,
            document = EXCLUDED.document, deleted = EXCLUDED.deleted, hash = EXCLUDED.hash
    ), i AS (
        INSERT INTO idempotency_keys (actor, key, request_hash, namespace, entry_key,
            version, position, recorded_at, event_ids)
        SELECT k.actor, k.key, decode(k.request_hash, 'hex'), k.namespace, k.entry_key,
            k.version, ev.notification_id, ev.recorded_at, k.event_ids
        FROM json_to_recordset(p_idempotency) AS k(actor text, key text, request_hash text,
            stream_id uuid, namespace text, entry_key text, version bigint, event_ids uuid[])
        JOIN ev ON ev.originator_id = k.stream_id AND ev.originator_version = k.version
    ), p AS MATERIALIZED (
        -- the payload is built only for a batch whose states could fit: the CASE runs its
        -- second subquery only when the first says so (a large batch's would be in vain);
        -- MATERIALIZED, or n's two mentions of it would build it twice
        SELECT CASE WHEN (SELECT sum(octet_length(ev.state)) FROM ev) < 3000 THEN (
            SELECT json_agg(json_build_array(ev.notification_id,
                    (extract(epoch FROM ev.recorded_at) * 1000000)::bigint, ev.topic,
                    ev.originator_version, encode(ev.state, 'hex'), h.event_id, h.namespace,
                    h.key, h.version, h.event_type, h.actor, h.reason, h.correlation_id,
                    h.causation_id, h.patch::text, h.document::text, h.resolution::text,
                    h.auth::text, ev.traceparent, ev.tracestate)
                ORDER BY ev.notification_id)::text
            FROM ev LEFT JOIN h ON h.position = ev.notification_id) END AS payload
    ), n AS (
        SELECT pg_notify('ssot_events', coalesce((SELECT CASE
            WHEN octet_length(p.payload) < 8000 THEN p.payload ELSE '' END FROM p), ''))
    )
    SELECT ev.originator_id, ev.originator_version, ev.notification_id, ev.recorded_at
    FROM ev CROSS JOIN n ORDER BY ev.notification_id;
END;
$fn$;

-- CREATE OR REPLACE keeps the grants but not these (0017): the function runs as the
-- schema's owner, with its search_path fixed.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ssot_append(stored_event_uuid[], json, json, text)'
                   ' SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END;
$$;
