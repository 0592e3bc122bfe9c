-- Helpers of test/bench/blasts.sh, in schema bench: the funnel counters a
-- scan of blast_recipients gives (the truth the triggers must keep), the
-- check that compares them with revenue_engine.blast_counters and
-- blast_funnel, and the WhatsApp callbacks of (c).
CREATE SCHEMA bench;
-- HMAC-SHA256 of the WhatsApp callback bodies (X-Hub-Signature-256)
CREATE EXTENSION pgcrypto SCHEMA bench;
-- (b) the counters of a run's range before a run without the trigger
CREATE TABLE bench.range_before (j jsonb);

-- The 13 counters of blast_counters computed by scanning the blast's
-- recipients (optionally only those with id in [lo, hi]), spread over the
-- funnel_slots() counter rows by recipient id.  Which row a change lands in
-- is the trigger's business: only the sums over a blast's rows are compared.
-- Every slot appears, with zeros if it has no recipient.
CREATE FUNCTION bench.scan_counters(blast bigint, lo bigint DEFAULT NULL, hi bigint DEFAULT NULL)
RETURNS TABLE (slot smallint, total bigint, sent bigint, delivered bigint, read bigint,
               replied bigint, closed bigint, at_pending bigint, at_sent bigint,
               at_delivered bigint, at_read bigint, at_replied bigint, at_closed bigint,
               at_failed bigint)
LANGUAGE sql STABLE
AS $fn$
    SELECT s.slot::smallint, coalesce(c.total, 0), coalesce(c.sent, 0), coalesce(c.delivered, 0),
           coalesce(c.read, 0), coalesce(c.replied, 0), coalesce(c.closed, 0),
           coalesce(c.at_pending, 0), coalesce(c.at_sent, 0), coalesce(c.at_delivered, 0),
           coalesce(c.at_read, 0), coalesce(c.at_replied, 0), coalesce(c.at_closed, 0),
           coalesce(c.at_failed, 0)
      FROM generate_series(0, revenue_engine.funnel_slots() - 1) AS s(slot)
      LEFT JOIN (
        SELECT r.id % revenue_engine.funnel_slots() AS slot, count(*) AS total,
               count(r.sent_at) AS sent, count(r.delivered_at) AS delivered,
               count(r.read_at) AS read, count(r.replied_at) AS replied,
               count(r.closed_at) AS closed,
               count(*) FILTER (WHERE r.status = 'pending') AS at_pending,
               count(*) FILTER (WHERE r.status = 'sent') AS at_sent,
               count(*) FILTER (WHERE r.status = 'delivered') AS at_delivered,
               count(*) FILTER (WHERE r.status = 'read') AS at_read,
               count(*) FILTER (WHERE r.status = 'replied') AS at_replied,
               count(*) FILTER (WHERE r.status = 'closed') AS at_closed,
               count(*) FILTER (WHERE r.status = 'failed') AS at_failed
          FROM revenue_engine.blast_recipients r
         WHERE r.tenant_id = revenue_engine.current_tenant() AND r.blast_id = blast
           AND (lo IS NULL OR r.id >= lo) AND (hi IS NULL OR r.id <= hi)
         GROUP BY 1) c ON c.slot = s.slot
$fn$;

-- Add delta (per slot, as scan_counters returns) to the blast's counter rows.
CREATE FUNCTION bench.add_to_counters(blast bigint, delta jsonb)
RETURNS void
LANGUAGE sql
AS $fn$
    UPDATE revenue_engine.blast_counters k
       SET total = k.total + d.total, sent = k.sent + d.sent, delivered = k.delivered + d.delivered,
           read = k.read + d.read, replied = k.replied + d.replied, closed = k.closed + d.closed,
           at_pending = k.at_pending + d.at_pending, at_sent = k.at_sent + d.at_sent,
           at_delivered = k.at_delivered + d.at_delivered, at_read = k.at_read + d.at_read,
           at_replied = k.at_replied + d.at_replied, at_closed = k.at_closed + d.at_closed,
           at_failed = k.at_failed + d.at_failed
      FROM jsonb_to_recordset(delta) AS d(slot smallint, total bigint, sent bigint, delivered bigint,
               read bigint, replied bigint, closed bigint, at_pending bigint, at_sent bigint,
               at_delivered bigint, at_read bigint, at_replied bigint, at_closed bigint,
               at_failed bigint)
     WHERE k.tenant_id = revenue_engine.current_tenant() AND k.blast_id = blast AND k.slot = d.slot
$fn$;

-- The counters of [lo, hi] now minus those of a scan_counters() taken before (as jsonb).
CREATE FUNCTION bench.counters_change(blast bigint, lo bigint, hi bigint, before jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
AS $fn$
    SELECT jsonb_agg(jsonb_build_object(
               'slot', a.slot, 'total', a.total - b.total, 'sent', a.sent - b.sent,
               'delivered', a.delivered - b.delivered, 'read', a.read - b.read,
               'replied', a.replied - b.replied, 'closed', a.closed - b.closed,
               'at_pending', a.at_pending - b.at_pending, 'at_sent', a.at_sent - b.at_sent,
               'at_delivered', a.at_delivered - b.at_delivered, 'at_read', a.at_read - b.at_read,
               'at_replied', a.at_replied - b.at_replied, 'at_closed', a.at_closed - b.at_closed,
               'at_failed', a.at_failed - b.at_failed))
      FROM bench.scan_counters(blast, lo, hi) a
      JOIN jsonb_to_recordset(before) AS b(slot smallint, total bigint, sent bigint, delivered bigint,
               read bigint, replied bigint, closed bigint, at_pending bigint, at_sent bigint,
               at_delivered bigint, at_read bigint, at_replied bigint, at_closed bigint,
               at_failed bigint) ON b.slot = a.slot
$fn$;

CREATE FUNCTION bench.scan_counters_json(blast bigint, lo bigint DEFAULT NULL, hi bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE
AS $fn$
    SELECT jsonb_agg(to_jsonb(s)) FROM bench.scan_counters(blast, lo, hi) s
$fn$;

-- The check: "<counters that differ> <funnel row> <scan row>"; 0 and equal
-- rows when the counters are exact.  The 13 counters are summed over the
-- blast's counter rows (which row a change lands in is the trigger's choice)
-- and compared with a scan; the funnel row is what blast_funnel shows (total
-- sent delivered read replied closed failed), the scan row the same figures
-- counted from blast_recipients.
CREATE FUNCTION bench.check_counters(blast bigint)
RETURNS text
LANGUAGE sql STABLE
AS $fn$
    WITH s AS (
        SELECT sum(total) AS total, sum(sent) AS sent, sum(delivered) AS delivered, sum(read) AS read,
               sum(replied) AS replied, sum(closed) AS closed, sum(at_pending) AS at_pending,
               sum(at_sent) AS at_sent, sum(at_delivered) AS at_delivered, sum(at_read) AS at_read,
               sum(at_replied) AS at_replied, sum(at_closed) AS at_closed, sum(at_failed) AS at_failed
          FROM bench.scan_counters(blast)),
    k AS (
        SELECT sum(total) AS total, sum(sent) AS sent, sum(delivered) AS delivered, sum(read) AS read,
               sum(replied) AS replied, sum(closed) AS closed, sum(at_pending) AS at_pending,
               sum(at_sent) AS at_sent, sum(at_delivered) AS at_delivered, sum(at_read) AS at_read,
               sum(at_replied) AS at_replied, sum(at_closed) AS at_closed, sum(at_failed) AS at_failed
          FROM revenue_engine.blast_counters k
         WHERE k.tenant_id = revenue_engine.current_tenant() AND k.blast_id = blast)
    SELECT (SELECT count(*) FROM s, k, LATERAL (VALUES
              (s.total, k.total), (s.sent, k.sent), (s.delivered, k.delivered), (s.read, k.read),
              (s.replied, k.replied), (s.closed, k.closed), (s.at_pending, k.at_pending),
              (s.at_sent, k.at_sent), (s.at_delivered, k.at_delivered), (s.at_read, k.at_read),
              (s.at_replied, k.at_replied), (s.at_closed, k.at_closed), (s.at_failed, k.at_failed))
              AS v(a, b)
             WHERE v.a IS DISTINCT FROM v.b)
           || ' ' ||
           (SELECT concat_ws(',', f.total, f.sent, f.delivered, f.read, f.replied, f.closed, f.failed)
              FROM revenue_engine.blast_funnel f WHERE f.blast_id = blast)
           || ' ' ||
           (SELECT concat_ws(',', count(*), count(r.sent_at), count(r.delivered_at), count(r.read_at),
                             count(r.replied_at), count(r.closed_at),
                             count(*) FILTER (WHERE r.status = 'failed'))
              FROM revenue_engine.blast_recipients r
             WHERE r.tenant_id = revenue_engine.current_tenant() AND r.blast_id = blast)
$fn$;

-- A WhatsApp Cloud API status item for recipient id: as WhatsApp sends it
-- (full: id, status, timestamp, recipient_id, conversation, pricing) or the
-- minimal one (id, status, timestamp).
CREATE FUNCTION bench.wa_status(id bigint, phone text, status text, at timestamptz, full_item boolean)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT jsonb_build_object('id', 'wamid.' || id, 'status', status,
                              'timestamp', extract(epoch FROM date_trunc('second', at))::bigint::text)
           || CASE WHEN full_item THEN jsonb_build_object(
                'recipient_id', substr(phone, 2),
                'conversation', jsonb_build_object('id', md5(id::text),
                                                   'origin', jsonb_build_object('type', 'marketing')),
                'pricing', jsonb_build_object('billable', true, 'pricing_model', 'CBP',
                                              'category', 'marketing'))
              ELSE '{}' END
$fn$;

-- A WhatsApp Cloud API callback body carrying these status items.
CREATE FUNCTION bench.wa_body(statuses jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT jsonb_build_object(
             'object', 'whatsapp_business_account',
             'entry', jsonb_build_array(jsonb_build_object(
               'id', '102290129340398',
               'changes', jsonb_build_array(jsonb_build_object(
                 'field', 'messages',
                 'value', jsonb_build_object(
                   'messaging_product', 'whatsapp',
                   'metadata', jsonb_build_object('display_phone_number', '15550783881',
                                                  'phone_number_id', '106540352242922'),
                   'statuses', statuses))))))::text
$fn$;

-- X-Hub-Signature-256 of a body: sha256=<hex HMAC-SHA256 with the app secret>.
CREATE FUNCTION bench.wa_headers(body text, secret text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT jsonb_build_object(
             'Content-Type', 'application/json',
             'X-Hub-Signature-256',
             'sha256=' || encode(bench.hmac(convert_to(body, 'UTF8'), convert_to(secret, 'UTF8'), 'sha256'), 'hex'))
$fn$;
