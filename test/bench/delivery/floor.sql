-- The database floor of the delivery worker: the same claim and mark-sent SQL
-- the worker runs (copied from src/outbox/delivery.c: claim_event_plan,
-- record_delivery_plan, record_event_status_plan, record_health_plan,
-- record_attempt_plan), with the same parameters, in the same short
-- transactions (one per claim, one per recorded batch), and no HTTP.
-- The worker prepares these statements with CURSOR_OPT_CUSTOM_PLAN (planned
-- for each batch, re_prepare_saved_custom), hence force_custom_plan here.
-- Copied from src/outbox/delivery.c at commit 8a3b692, the claim as one statement
-- for many targets since issue 10 (the record statements there are only
-- schema-qualified since: the same plans); keep them in step.
-- Settings read: bench.endpoint (endpoint name), bench.claim_batch,
-- bench.record_batch.  Prints "floor <start epoch> <claims> <records> <rows>
-- <seconds in claim transactions> <seconds in record transactions>".
SET plan_cache_mode = force_custom_plan;
DO $floor$
DECLARE
    v_tenant   text := revenue_engine.current_tenant();
    v_ep       bigint;
    v_claim    int := current_setting('bench.claim_batch')::int;
    v_rec      int := current_setting('bench.record_batch')::int;
    v_start    float8 := extract(epoch FROM clock_timestamp());
    ids        text[];
    atts       int[];
    blen       bigint;
    n          int;
    i          int;
    m          int;
    nclaims    int := 0;
    nrecords   int := 0;
    nrows      bigint := 0;
    t          timestamptz;
    t_claim    float8 := 0;     -- seconds in claim transactions (statement + commit)
    t_record   float8 := 0;     -- seconds in record transactions
    -- the arrays the worker binds to the record statements
    a_tenant   text[];
    a_event    text[];
    a_target   bigint[];
    a_status   text[];
    a_next     timestamptz[];
    a_code     int[];
    a_err      text[];
    a_kind     text[];
    a_send     bigint[];
    a_attempt  int[];
    a_started  timestamptz[];
    a_latency  real[];
    a_outcome  text[];
    a_body     text[];
BEGIN
    SELECT e.id INTO STRICT v_ep FROM revenue_engine.endpoints e
     WHERE e.tenant_id = v_tenant AND e.name = current_setting('bench.endpoint');
    COMMIT;
    LOOP
        t := clock_timestamp();
        -- claim_event_plan ($1 tenants, $2 endpoints, $3 limits, $4 in all: here
        -- one endpoint); the rows the worker reads back (target, id, attempts,
        -- payload text) are aggregated here.
        WITH t AS (
          SELECT * FROM ROWS FROM (pg_catalog.unnest(ARRAY[v_tenant]::text[]),
                                   pg_catalog.unnest(ARRAY[v_ep]::int8[]),
                                   pg_catalog.unnest(ARRAY[v_claim]::int4[]))
                 WITH ORDINALITY AS t(tenant_id, target_id, lim, i)
        ), c AS MATERIALIZED (
          SELECT t.i, d.tenant_id, d.event_id, d.endpoint_id FROM t,
           LATERAL (SELECT d.tenant_id, d.event_id, d.endpoint_id
                      FROM revenue_engine.deliveries d
                     WHERE d.endpoint_id = t.target_id AND d.tenant_id = t.tenant_id
                       AND d.status = 'pending' AND d.next_attempt_at <= pg_catalog.now()
                     ORDER BY d.next_attempt_at LIMIT t.lim FOR UPDATE SKIP LOCKED) d
          LIMIT v_claim
        ), u AS (
          UPDATE revenue_engine.deliveries d
             SET status = 'sending', attempts = d.attempts + 1,
                 lease_until = pg_catalog.now() + '10 minutes'::interval
            FROM c WHERE d.tenant_id = c.tenant_id AND d.event_id = c.event_id
             AND d.endpoint_id = c.endpoint_id
          RETURNING c.i, d.tenant_id, d.event_id, d.attempts
        ), r AS (
          SELECT u.i, u.event_id::text AS id, u.attempts,
                 pg_catalog.jsonb_build_object('id', e.id, 'event', e.event_type,
                                    'timestamp', e.created_at, 'user', e.user_data,
                                    'metadata', e.event_data)::text AS body
            FROM u JOIN revenue_engine.webhook_events e
              ON e.tenant_id = u.tenant_id AND e.id = u.event_id
        )
        SELECT array_agg(r.id), array_agg(r.attempts), sum(length(r.body))
          INTO ids, atts, blen FROM r;
        COMMIT;
        t_claim := t_claim + extract(epoch FROM clock_timestamp() - t);
        nclaims := nclaims + 1;
        n := coalesce(cardinality(ids), 0);
        EXIT WHEN n = 0;

        i := 1;
        WHILE i <= n LOOP
            t := clock_timestamp();
            m := least(v_rec, n - i + 1);
            a_tenant  := array_fill(v_tenant, ARRAY[m]);
            a_event   := ids[i:i + m - 1];
            a_target  := array_fill(v_ep, ARRAY[m]);
            a_status  := array_fill('sent'::text, ARRAY[m]);
            a_next    := array_fill(NULL::timestamptz, ARRAY[m]);
            a_code    := array_fill(204, ARRAY[m]);
            a_err     := array_fill(NULL::text, ARRAY[m]);
            a_kind    := array_fill('event'::text, ARRAY[m]);
            a_send    := array_fill(NULL::bigint, ARRAY[m]);
            a_attempt := atts[i:i + m - 1];
            a_started := array_fill(clock_timestamp(), ARRAY[m]);
            a_latency := array_fill(1.0::real, ARRAY[m]);
            a_outcome := array_fill('sent'::text, ARRAY[m]);
            a_body    := array_fill(NULL::text, ARRAY[m]);

            -- record_delivery_plan
            UPDATE revenue_engine.deliveries d
               SET status = o.status, lease_until = NULL, last_status = o.code,
                   last_error = o.err,
                   next_attempt_at = coalesce(o.next_at, d.next_attempt_at),
                   sent_at = CASE WHEN o.status = 'sent' THEN now() END
              FROM unnest(a_tenant, a_event::uuid[], a_target, a_status, a_next, a_code, a_err)
                   AS o(tenant_id, event_id, endpoint_id, status, next_at, code, err)
             WHERE d.tenant_id = o.tenant_id AND d.event_id = o.event_id
               AND d.endpoint_id = o.endpoint_id AND d.status = 'sending';
            -- record_event_status_plan
            UPDATE revenue_engine.webhook_events e
               SET status = x.status, attempts = x.attempts, sent_at = x.sent_at,
                   error_message = x.err
              FROM (SELECT d.tenant_id, d.event_id,
                           CASE WHEN bool_and(d.status = 'sent') THEN 'sent'
                                WHEN bool_or(d.status = 'dead') THEN 'failed'
                                ELSE 'pending' END AS status,
                           max(d.attempts) AS attempts, max(d.sent_at) AS sent_at,
                           string_agg(d.last_error, '; ') FILTER (WHERE d.status <> 'sent') AS err
                      FROM revenue_engine.deliveries d
                      JOIN (SELECT DISTINCT * FROM unnest(a_tenant, a_event::uuid[]) AS k(tenant_id, event_id)) k
                        ON d.tenant_id = k.tenant_id AND d.event_id = k.event_id
                     GROUP BY 1, 2) x
             WHERE e.tenant_id = x.tenant_id AND e.id = x.event_id;
            -- record_health_plan (one row per endpoint in the batch)
            UPDATE revenue_engine.endpoints e
               SET failing_since = CASE WHEN o.any_ok THEN NULL
                                        ELSE coalesce(e.failing_since, now()) END,
                   enabled = e.enabled AND NOT o.gone,
                   disabled_at = CASE WHEN o.gone THEN now() ELSE e.disabled_at END,
                   disabled_reason = CASE WHEN o.gone THEN
                        'the endpoint answered 410 Gone' ELSE e.disabled_reason END
              FROM unnest(ARRAY[v_tenant], ARRAY[v_ep], ARRAY[true], ARRAY[false]) AS o(tenant_id, id, any_ok, gone)
             WHERE e.tenant_id = o.tenant_id AND e.id = o.id
               AND (e.failing_since IS DISTINCT FROM
                    CASE WHEN o.any_ok THEN NULL ELSE coalesce(e.failing_since, now()) END
                    OR o.gone);
            -- record_attempt_plan
            INSERT INTO revenue_engine.delivery_attempts
             (tenant_id, kind, event_id, endpoint_id, send_id, channel_id, attempt,
              started_at, latency_ms, status_code, outcome, error, response_body)
            SELECT o.tenant_id, o.kind, o.event_id::uuid,
                   CASE WHEN o.kind = 'event' THEN o.target END, o.send_id,
                   CASE WHEN o.kind = 'send' THEN o.target END,
                   o.attempt, o.started_at, o.latency, o.code, o.outcome, o.err, o.body
              FROM unnest(a_tenant, a_kind, a_event, a_target, a_send, a_send, a_attempt,
                          a_started, a_latency, a_code, a_outcome, a_err, a_body)
                   AS o(tenant_id, kind, event_id, target, send_id, unused, attempt,
                        started_at, latency, code, outcome, err, body);
            COMMIT;
            t_record := t_record + extract(epoch FROM clock_timestamp() - t);
            nrecords := nrecords + 1;
            nrows := nrows + m;
            i := i + m;
        END LOOP;
    END LOOP;
    RAISE NOTICE 'floor % % % % % %', v_start, nclaims, nrecords, nrows, t_claim, t_record;
END
$floor$;
