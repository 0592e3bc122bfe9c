-- Blasts: recipients in, sends queued, statuses tracked by the rules of
-- status.c, and funnel counters equal to a scan of the recipients.
--
-- Nothing leaves this test: the channel is disabled and every blast is
-- scheduled in 2030, so the delivery worker never claims a send.  The worker's
-- part is played by UPDATEs of revenue_engine.sends (queued -> sending ->
-- sent / failed), which fire the trigger that lands the outcome on the
-- recipient.  Status times are fixed instants around T0 = 2026-11-01 10:00 UTC
-- (in the past, as statuses in the future are refused) and are shown as
-- intervals from T0.
\c
\set SHOW_CONTEXT never
-- Times in UTC, as the comments give them.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';

-- The worker's part: claim a recipient's send, then record its outcome.
CREATE FUNCTION bt_send(p_blast bigint, p_phone text, p_message_id text, p_sent_at timestamptz)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    rid bigint := (SELECT r.id FROM revenue_engine.blast_recipients r
                    WHERE r.blast_id = p_blast AND r.phone = p_phone);
BEGIN
    UPDATE revenue_engine.sends SET status = 'sending', attempts = attempts + 1
     WHERE blast_id = p_blast AND recipient_id = rid;
    UPDATE revenue_engine.sends
       SET status = 'sent', sent_at = p_sent_at, provider_message_id = p_message_id,
           response_status = 200,
           response_body = jsonb_build_object('messaging_product', 'whatsapp',
                             'messages', jsonb_build_array(jsonb_build_object('id', p_message_id)))::text
     WHERE blast_id = p_blast AND recipient_id = rid;
    RETURN (SELECT r.status FROM revenue_engine.blast_recipients r WHERE r.id = rid);
END
$$;
CREATE FUNCTION bt_fail(p_blast bigint, p_phone text, p_error text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    rid bigint := (SELECT r.id FROM revenue_engine.blast_recipients r
                    WHERE r.blast_id = p_blast AND r.phone = p_phone);
BEGIN
    UPDATE revenue_engine.sends SET status = 'sending', attempts = attempts + 1
     WHERE blast_id = p_blast AND recipient_id = rid;
    UPDATE revenue_engine.sends
       SET status = 'failed', response_status = 400, last_error = p_error,
           response_body = '{"error": {"code": 131030}}'
     WHERE blast_id = p_blast AND recipient_id = rid;
    RETURN (SELECT r.status FROM revenue_engine.blast_recipients r WHERE r.id = rid);
END
$$;
-- The latest recipient of a phone: status and stage times as offsets from T0.
CREATE FUNCTION bt_state(p_phone text)
RETURNS TABLE (status text, sent interval, delivered interval, read interval,
               replied interval, closed interval, failed interval, error jsonb, amount numeric)
LANGUAGE sql AS $$
  SELECT r.status, r.sent_at - t0, r.delivered_at - t0, r.read_at - t0, r.replied_at - t0,
         r.closed_at - t0, r.failed_at - t0, r.error, r.amount
    FROM revenue_engine.blast_recipients r, (SELECT timestamptz '2026-11-01 10:00+00' AS t0) c
   WHERE r.phone = p_phone ORDER BY r.id DESC LIMIT 1
$$;
-- The status history of a phone's recipients, times as offsets from T0 ('now'
-- for a time taken from the clock); a send_id in the metadata is shown as
-- whether it is the recipient's send.
CREATE FUNCTION bt_history(p_phone text)
RETURNS TABLE (old_status text, new_status text, at text, source text, message_id text,
               metadata jsonb, is_its_send boolean)
LANGUAGE sql AS $$
  SELECT h.old_status, h.new_status,
         CASE WHEN h.occurred_at > '2026-11-10' THEN 'now'
              ELSE (h.occurred_at - timestamptz '2026-11-01 10:00+00')::text END,
         h.source, h.message_id, h.metadata - 'send_id',
         (h.metadata->>'send_id')::bigint = (SELECT s.id FROM revenue_engine.sends s
                                              WHERE s.blast_id = r.blast_id AND s.recipient_id = r.id)
    FROM revenue_engine.status_history h
    JOIN revenue_engine.blast_recipients r ON r.tenant_id = h.tenant_id AND r.id = h.recipient_id
   WHERE r.phone = p_phone ORDER BY h.id
$$;
-- Funnel of one blast: the counters (blast_funnel) and a full scan of its recipients.
CREATE FUNCTION bt_funnel(p_blast bigint)
RETURNS TABLE (source text, total bigint, sent bigint, delivered bigint, read bigint,
               replied bigint, closed bigint, failed bigint)
LANGUAGE sql AS $$
  SELECT 'counters', f.total, f.sent, f.delivered, f.read, f.replied, f.closed, f.failed
    FROM revenue_engine.blast_funnel f WHERE f.blast_id = p_blast
  UNION ALL
  SELECT 'scan', count(*), count(r.sent_at), count(r.delivered_at), count(r.read_at),
         count(r.replied_at), count(r.closed_at), count(*) FILTER (WHERE r.status = 'failed')
    FROM revenue_engine.blast_recipients r WHERE r.blast_id = p_blast
$$;
-- Every blast whose counters (funnel or stuck) differ from a scan: no row when all agree.
CREATE VIEW bt_counter_drift AS
WITH scan AS (
  SELECT b.id AS blast_id,
         count(r.id) AS total, count(r.sent_at) AS sent, count(r.delivered_at) AS delivered,
         count(r.read_at) AS read, count(r.replied_at) AS replied, count(r.closed_at) AS closed,
         count(*) FILTER (WHERE r.status = 'pending') AS at_pending,
         count(*) FILTER (WHERE r.status = 'sent') AS at_sent,
         count(*) FILTER (WHERE r.status = 'delivered') AS at_delivered,
         count(*) FILTER (WHERE r.status = 'read') AS at_read,
         count(*) FILTER (WHERE r.status = 'replied') AS at_replied,
         count(*) FILTER (WHERE r.status = 'closed') AS at_closed,
         count(*) FILTER (WHERE r.status = 'failed') AS at_failed
    FROM revenue_engine.blasts b
    LEFT JOIN revenue_engine.blast_recipients r ON r.tenant_id = b.tenant_id AND r.blast_id = b.id
   GROUP BY b.id),
counters AS (
  SELECT f.blast_id, f.total, f.sent, f.delivered, f.read, f.replied, f.closed,
         (SELECT array_agg(s.stuck ORDER BY s.stage) FROM revenue_engine.blast_stuck s
           WHERE s.blast_id = f.blast_id) AS stuck, f.failed
    FROM revenue_engine.blast_funnel f)
SELECT s.blast_id, c.blast_id AS counted_blast
  FROM scan s FULL JOIN counters c ON c.blast_id = s.blast_id
 WHERE c.blast_id IS NULL OR s.blast_id IS NULL
    OR (s.total, s.sent, s.delivered, s.read, s.replied, s.closed, s.at_failed)
       IS DISTINCT FROM (c.total, c.sent, c.delivered, c.read, c.replied, c.closed, c.failed)
    -- blast_stuck's stages in alphabetical order
    OR ARRAY[s.at_closed, s.at_delivered, s.at_failed, s.at_pending, s.at_read, s.at_replied, s.at_sent]
       IS DISTINCT FROM c.stuck;

-- ---------------------------------------------------------------------------
-- Phone numbers
-- ---------------------------------------------------------------------------
SELECT replace(input, E'\t', '<tab>') AS input, revenue_engine.phone_problem(input) AS problem,
       CASE WHEN revenue_engine.phone_problem(input) IS NULL
            THEN revenue_engine.normalize_phone(input) END AS normalized
  FROM (VALUES ('+1 (415) 555-2671'), ('+60 12-345 6789'), ('+44.20.7946.0958'), (E'+49\t30 123456'),
               ('+1234567'), ('+123456789012345'), ('+1234567890123456'), ('+123456'),
               ('14155552671'), ('+0123456789'), ('++14155552671'), ('+1 415 CALL NOW'),
               ('+'), (''), ('  '), (NULL)) AS v(input);
SELECT revenue_engine.normalize_phone('0123');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.normalize_phone(NULL);
\echo :LAST_ERROR_SQLSTATE

-- ---------------------------------------------------------------------------
-- create_blast
-- ---------------------------------------------------------------------------
SELECT revenue_engine.create_channel('wa_blasts', 'https://graph.example.com/v19.0/123/messages',
         headers => '{"Authorization": "Bearer EAAG"}',
         body_template => '{"messaging_product": "whatsapp"}',
         message_id_path => '{messages,0,id}', enabled => false) > 0 AS created;

-- Recipients as an array of strings: normalized; the fourth is the first again.
SELECT recipient_count, duplicates, rejected FROM revenue_engine.create_blast('wa_blasts', 'launch',
         recipients => '["+1 (415) 555-2671", "+60 12-345 6789", "+44.20.7946.0958", "+1-415-555-2671", "+33 1 23 45 67 89"]',
         message => 'Hi {{name}}, news for {{phone}}!',
         scheduled_for => '2030-01-15 09:00+00');
SELECT tag, follow_up_stage, message, template, payload, scheduled_for, status,
       total_recipients, duplicates, rejected, started_at, completed_at
  FROM revenue_engine.blasts ORDER BY id;
SELECT r.phone, r.name, r.contact_id, r.status, r.provider_message_id,
       s.status AS send_status, s.payload, s.metadata = jsonb_build_object('blast_id', r.blast_id) AS metadata_names_blast,
       s.scheduled_for, s.next_attempt_at,
       s.idempotency_key, c.name AS channel
  FROM revenue_engine.blast_recipients r
  JOIN revenue_engine.sends s ON s.recipient_id = r.id AND s.blast_id = r.blast_id
  JOIN revenue_engine.channels c ON c.id = s.channel_id
 WHERE r.blast_id = (SELECT max(id) FROM revenue_engine.blasts) ORDER BY r.id;
SELECT tag, blast_date, blast_status, total, sent, failed FROM revenue_engine.blast_funnel;

-- Objects with names and contact ids, mixed with strings; a number given
-- twice keeps its first name and contact id.
SELECT recipient_count, duplicates, rejected FROM revenue_engine.create_blast('wa_blasts', 'launch',
         recipients => '[{"phone": "+60 12 345 6789", "name": "Aisyah", "contact_id": "c-1"},
                         "+6591234567",
                         {"phone": "+65 9123 4567", "name": "Wei", "contact_id": "c-2"},
                         {"phone": "+60-12-345-6789", "name": "Second Aisyah", "contact_id": "c-9"},
                         {"phone": "+852 5123 4567", "name": "Ka Ho"},
                         {"phone": "+852.5123.4567", "contact_id": "c-3"}]',
         message => 'Hi {{name}}!', payload => '{"biz_opaque_callback_data": "launch-2"}',
         scheduled_for => '2030-01-15 09:00+00');
SELECT r.phone, r.name, r.contact_id, s.payload
  FROM revenue_engine.blast_recipients r
  JOIN revenue_engine.sends s ON s.recipient_id = r.id
 WHERE r.blast_id = (SELECT max(id) FROM revenue_engine.blasts) ORDER BY r.id;

-- A template instead of a message: the payload carries it as is.
SELECT recipient_count, duplicates, rejected FROM revenue_engine.create_blast('wa_blasts', 'launch_template',
         recipients => '[{"phone": "+14155550100", "name": "Ann"}]',
         template => '{"name": "spring_offer", "language": {"code": "en_US"},
                       "components": [{"type": "body", "parameters": [{"type": "text", "text": "20%"}]}]}',
         payload => '{"recipient_type": "individual"}',
         scheduled_for => '2030-01-15 09:00+00', follow_up_stage => 2);
SELECT b.tag, b.follow_up_stage, b.message, s.payload
  FROM revenue_engine.blasts b JOIN revenue_engine.sends s ON s.blast_id = b.id
 WHERE b.id = (SELECT max(id) FROM revenue_engine.blasts);

-- Recipients from a query of 1, 2 and 3 columns (any column names and types).
CREATE TABLE bt_leads (id int, mobile text, full_name text, crm_id bigint);
INSERT INTO bt_leads VALUES (1, '+1 202 555 0101', 'Ada', 901), (2, '+1 202 555 0102', 'Bo', 902),
                            (3, '+1-202-555-0101', 'Ada again', 903), (4, '+1 202 555 0103', NULL, 904);
SELECT recipient_count, duplicates, rejected FROM revenue_engine.create_blast('wa_blasts', 'from_query',
         recipients_query => 'SELECT mobile FROM bt_leads ORDER BY id',
         message => 'Hello {{name}}', scheduled_for => '2030-01-15 09:00+00');
SELECT phone, name, contact_id FROM revenue_engine.blast_recipients
 WHERE blast_id = (SELECT max(id) FROM revenue_engine.blasts) ORDER BY id;
SELECT recipient_count, duplicates, rejected FROM revenue_engine.create_blast('wa_blasts', 'from_query',
         recipients_query => 'SELECT mobile, full_name FROM bt_leads ORDER BY id',
         message => 'Hello {{name}}', scheduled_for => '2030-01-15 09:00+00');
SELECT r.phone, r.name, r.contact_id, s.payload->'text'->>'body' AS body
  FROM revenue_engine.blast_recipients r JOIN revenue_engine.sends s ON s.recipient_id = r.id
 WHERE r.blast_id = (SELECT max(id) FROM revenue_engine.blasts) ORDER BY r.id;
SELECT recipient_count, duplicates, rejected FROM revenue_engine.create_blast('wa_blasts', 'from_query',
         recipients_query => 'SELECT mobile AS p, full_name AS n, crm_id AS c FROM bt_leads ORDER BY id',
         message => 'Hello {{name}}', scheduled_for => '2030-01-15 09:00+00');
SELECT phone, name, contact_id FROM revenue_engine.blast_recipients
 WHERE blast_id = (SELECT max(id) FROM revenue_engine.blasts) ORDER BY id;

-- on_invalid 'error' (the default): the bad numbers (the first five) in the error, nothing created.
SELECT count(*) AS blasts_before FROM revenue_engine.blasts \gset
SELECT * FROM revenue_engine.create_blast('wa_blasts', 'bad',
         recipients => '["+14155552671", "0123", "+0123456789", "++14155552671", "+123", "", "+1234567890123456"]',
         message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM revenue_engine.create_blast('wa_blasts', 'bad',
         recipients_query => 'SELECT * FROM (VALUES (''+14155552671''), (NULL), (''n/a'')) v(p)',
         message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) = :blasts_before AS nothing_created FROM revenue_engine.blasts;

-- on_invalid 'skip': the blast takes the good numbers, blast_rejections says why not the others.
SELECT * FROM revenue_engine.create_blast('wa_blasts', 'skip_bad',
         recipients => '["0123", "+14155552671", "+0123456789", "+1 415 555 2671", "+123", {"phone": "+1 415 CALL"}, "+1234567890123456", ""]',
         message => 'Hi', scheduled_for => '2030-01-15 09:00+00', on_invalid => 'skip') \gset skip_
SELECT :skip_recipient_count AS recipients, :skip_duplicates AS duplicates, :skip_rejected AS rejected;
SELECT position, input, reason FROM revenue_engine.blast_rejections
 WHERE blast_id = :skip_blast_id ORDER BY position;
SELECT total_recipients, duplicates, rejected FROM revenue_engine.blasts WHERE id = :skip_blast_id;
SELECT phone FROM revenue_engine.blast_recipients WHERE blast_id = :skip_blast_id;

-- Every other bad argument, with its SQLSTATE; none creates anything.
SELECT revenue_engine.create_blast('wa_blasts', 'x', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]',
         recipients_query => 'SELECT ''+14155552671''', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast(NULL, 'x', recipients => '["+14155552671"]', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', NULL, recipients => '["+14155552671"]', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', message => 'Hi', payload => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', message => 'Hi', follow_up_stage => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', message => 'Hi', on_invalid => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', '', recipients => '["+14155552671"]', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', repeat('t', 201), recipients => '["+14155552671"]', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', message => 'Hi', on_invalid => 'ignore');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', message => 'Hi', follow_up_stage => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', message => 'Hi', template => '{"name": "t"}');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', message => '');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', template => '"spring_offer"');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', message => 'Hi', payload => '[1]');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671"]', message => 'Hi', scheduled_for => 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('no_such_channel', 'x', recipients => '["+14155552671"]', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '{"phone": "+14155552671"}', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["+14155552671", 14155552672]', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '[{"name": "no phone"}]', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '[{"phone": 14155552671}]', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '[]', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients => '["bad", "worse"]', message => 'Hi', on_invalid => 'skip');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients_query => 'SELECT', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x',
         recipients_query => 'SELECT mobile, full_name, crm_id, id FROM bt_leads', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_blast('wa_blasts', 'x', recipients_query => 'SELEC mobile FROM bt_leads', message => 'Hi');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) = :blasts_before + 1 AS only_skip_bad_created, count(*) FILTER (WHERE tag = 'x') AS x_blasts
  FROM revenue_engine.blasts;
SELECT count(*) AS sends_of_no_blast FROM revenue_engine.sends s
 WHERE s.blast_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM revenue_engine.blasts b WHERE b.id = s.blast_id);

-- ---------------------------------------------------------------------------
-- Statuses: every transition of the rules
-- ---------------------------------------------------------------------------
SELECT blast_id AS tr FROM revenue_engine.create_blast('wa_blasts', 'transitions',
         recipients => '["+15550000001", "+15550000002", "+15550000003", "+15550000004",
                         "+15550000005", "+15550000006", "+15550000007", "+15550000008",
                         "+15550000009", "+15550000010", "+15550000011", "+15550000012"]',
         message => 'Hi', scheduled_for => '2030-01-16 09:00+00') \gset

-- The worker's claim and outcome, spelled out once (bt_send does the same):
-- the id lands on the recipient, which becomes sent at the send's sent_at.
-- (One transaction, as the worker's: no send is left 'sending' in between.)
BEGIN;
UPDATE revenue_engine.sends SET status = 'sending', attempts = attempts + 1
 WHERE blast_id = :tr AND recipient_id = (SELECT id FROM revenue_engine.blast_recipients
                                           WHERE blast_id = :tr AND phone = '+15550000001');
SELECT status FROM revenue_engine.blast_recipients WHERE phone = '+15550000001';
UPDATE revenue_engine.sends
   SET status = 'sent', sent_at = '2026-11-01 10:00+00', provider_message_id = 'wamid.R1',
       response_status = 200, response_body = '{"messages": [{"id": "wamid.R1"}]}'
 WHERE blast_id = :tr AND recipient_id = (SELECT id FROM revenue_engine.blast_recipients
                                           WHERE blast_id = :tr AND phone = '+15550000001');
COMMIT;
SELECT status, provider_message_id, send_response, sent_at = '2026-11-01 10:00+00' AS sent_at_of_send
  FROM revenue_engine.blast_recipients WHERE phone = '+15550000001';
SELECT status, started_at IS NOT NULL AS started, completed_at FROM revenue_engine.blasts WHERE id = :tr;

-- pending -> sent -> delivered -> read -> replied -> closed, each once.
SELECT revenue_engine.record_message_status('wamid.R1', 'delivered', '2026-11-01 10:01+00', 'webhook', '{"id": "wamid.R1"}');
SELECT revenue_engine.record_message_status('wamid.R1', 'read', '2026-11-01 10:02+00', 'polling');
SELECT revenue_engine.record_message_status('wamid.R1', 'replied', '2026-11-01 10:03+00');
SELECT revenue_engine.record_message_status('wamid.R1', 'closed', '2026-11-01 10:04+00');
SELECT * FROM bt_state('+15550000001');
-- The same status again: duplicate, nothing written.
SELECT revenue_engine.record_message_status('wamid.R1', 'closed', '2026-11-01 10:04+00');
SELECT revenue_engine.record_message_status('wamid.R1', 'closed', '2026-11-01 10:09+00');
-- A lower status later: stale, nothing written (its own stage has an earlier time).
SELECT revenue_engine.record_message_status('wamid.R1', 'delivered', '2026-11-01 10:30+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.R1', 'sent', '2026-11-01 10:30+00', 'webhook');
SELECT * FROM bt_state('+15550000001');
SELECT * FROM bt_history('+15550000001');

-- Read before delivered: delivered is filled with the read's time.
SELECT bt_send(:tr, '+15550000002', 'wamid.R2', '2026-11-01 10:00+00');
SELECT revenue_engine.record_message_status('wamid.R2', 'read', '2026-11-01 10:05+00', 'webhook');
SELECT * FROM bt_state('+15550000002');
-- The late delivered, earlier than the read: stale, and only delivered_at moves earlier.
SELECT revenue_engine.record_message_status('wamid.R2', 'delivered', '2026-11-01 10:02+00', 'webhook');
SELECT * FROM bt_state('+15550000002');
-- A later delivered: stale, no change (the earliest report of a stage is kept).
SELECT revenue_engine.record_message_status('wamid.R2', 'delivered', '2026-11-01 10:03+00', 'webhook');
-- An earlier sent report: stale, and sent_at stays the send's (no stage is earlier than the send).
SELECT revenue_engine.record_message_status('wamid.R2', 'sent', '2026-11-01 09:59+00', 'webhook');
-- The same read, and an earlier report of it: duplicate; the earlier one moves read_at.
SELECT revenue_engine.record_message_status('wamid.R2', 'read', '2026-11-01 10:05+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.R2', 'read', '2026-11-01 10:04+00', 'webhook');
SELECT * FROM bt_state('+15550000002');
SELECT * FROM bt_history('+15550000002');

-- A stage reported earlier than the send (a provider's clock, a replay): taken
-- at the send's time, never earlier; no stage is later than the next.
SELECT bt_send(:tr, '+15550000003', 'wamid.R3', '2026-11-01 10:00+00');
SELECT revenue_engine.record_message_status('wamid.R3', 'delivered', '2026-11-01 09:58+00', 'webhook');
SELECT * FROM bt_state('+15550000003');
SELECT revenue_engine.record_message_status('wamid.R3', 'replied', '2026-11-01 09:57+00', 'manual');
SELECT * FROM bt_state('+15550000003');

-- Failed (with the provider's error) before delivered.
SELECT bt_send(:tr, '+15550000004', 'wamid.R4', '2026-11-01 10:00+00');
SELECT revenue_engine.record_message_status('wamid.R4', 'failed', '2026-11-01 10:01+00', 'webhook',
         '{"code": 131026, "title": "Message undeliverable"}');
SELECT * FROM bt_state('+15550000004');
-- failed again: duplicate; sent again (not above what was reached): stale, still failed.
SELECT revenue_engine.record_message_status('wamid.R4', 'failed', '2026-11-01 10:02+00', 'webhook', '{"code": 1}');
SELECT revenue_engine.record_message_status('wamid.R4', 'sent', '2026-11-01 10:02+00', 'webhook');
SELECT * FROM bt_state('+15550000004');
-- A higher status after failed: the provider delivered after all; failed_at and the error stay.
SELECT revenue_engine.record_message_status('wamid.R4', 'delivered', '2026-11-01 10:03+00', 'webhook');
SELECT * FROM bt_state('+15550000004');
-- Failed after delivered: stale, nothing changes.
SELECT revenue_engine.record_message_status('wamid.R4', 'failed', '2026-11-01 10:04+00', 'webhook', '{"code": 2}');
SELECT * FROM bt_state('+15550000004');
SELECT * FROM bt_history('+15550000004');

-- Failed after delivered on a recipient that never failed before: stale.
SELECT bt_send(:tr, '+15550000005', 'wamid.R5', '2026-11-01 10:00+00');
SELECT revenue_engine.record_message_status('wamid.R5', 'delivered', '2026-11-01 10:01+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.R5', 'failed', '2026-11-01 10:02+00', 'webhook', '{"code": 3}');
SELECT * FROM bt_state('+15550000005');

-- The send itself failed: the recipient is failed (source send) with the
-- send's error; the send redriven and sent later moves it on to sent.
SELECT bt_fail(:tr, '+15550000006', 'HTTP 400: (#131030) Recipient phone number not in allowed list');
SELECT r.status, r.sent_at, r.failed_at > '2026-11-10' AS failed_now, r.error - 'send_id' AS error,
       (r.error->>'send_id')::bigint = s.id AS error_names_its_send, r.provider_message_id, r.send_response
  FROM revenue_engine.blast_recipients r JOIN revenue_engine.sends s ON s.recipient_id = r.id
 WHERE r.phone = '+15550000006';
SELECT * FROM bt_history('+15550000006');
SELECT bt_send(:tr, '+15550000006', 'wamid.R6', '2026-11-01 10:10+00');
SELECT status, sent, delivered, failed > '9 days' AS failed_earlier, error - 'send_id' AS error
  FROM bt_state('+15550000006');
SELECT * FROM bt_history('+15550000006');

-- Parked: statuses for an id that has not landed yet are kept, then applied
-- in arrival order when the send's outcome lands the id.
SELECT revenue_engine.record_message_status('wamid.R7', 'read', '2026-11-01 10:02+00', 'webhook', '{"id": "wamid.R7", "status": "read"}');
SELECT revenue_engine.record_message_status('wamid.R7', 'delivered', '2026-11-01 10:01+00', 'webhook', '{"id": "wamid.R7", "status": "delivered"}');
SELECT revenue_engine.record_message_status('wamid.R7', 'read', '2026-11-01 10:02+00', 'webhook');
SELECT message_id, status, occurred_at - '2026-11-01 10:00+00' AS at, source, raw
  FROM revenue_engine.status_parked ORDER BY id;
SELECT * FROM bt_state('+15550000007');
SELECT bt_send(:tr, '+15550000007', 'wamid.R7', '2026-11-01 10:00+00');
SELECT * FROM bt_state('+15550000007');
SELECT * FROM bt_history('+15550000007');
SELECT count(*) AS parked FROM revenue_engine.status_parked;
-- A parked failure applies its error.
SELECT revenue_engine.record_message_status('wamid.R8', 'failed', '2026-11-01 10:01+00', 'webhook', '{"code": 131047}');
SELECT bt_send(:tr, '+15550000008', 'wamid.R8', '2026-11-01 10:00+00');
SELECT * FROM bt_state('+15550000008');
SELECT count(*) AS parked FROM revenue_engine.status_parked;
-- An id that never lands stays parked.
SELECT revenue_engine.record_message_status('wamid.NEVER', 'delivered', '2026-11-01 10:01+00', 'webhook');
SELECT message_id, status FROM revenue_engine.status_parked;

-- occurred_at defaults to now; source to manual.
BEGIN;
SELECT bt_send(:tr, '+15550000009', 'wamid.R9', '2026-11-01 10:00+00');
SELECT revenue_engine.record_message_status('wamid.R9', 'delivered');
SELECT delivered_at = now() AS delivered_now FROM revenue_engine.blast_recipients WHERE phone = '+15550000009';
SELECT source FROM bt_history('+15550000009') WHERE new_status = 'delivered';
COMMIT;

-- Bad arguments of record_message_status: an error with its SQLSTATE, nothing written.
SELECT count(*) AS history_before FROM revenue_engine.status_history \gset
SELECT revenue_engine.record_message_status('wamid.R9', 'bogus', '2026-11-01 10:05+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('wamid.R9', 'pending', '2026-11-01 10:05+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('wamid.R9', 'READ', '2026-11-01 10:05+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('wamid.R9', NULL, '2026-11-01 10:05+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status(NULL, 'read', '2026-11-01 10:05+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('', 'read', '2026-11-01 10:05+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status(repeat('m', 201), 'read', '2026-11-01 10:05+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('wamid.R9', 'read', '2099-01-01 00:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('wamid.R9', 'read', '1999-12-31 23:59:59+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('wamid.R9', 'read', 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('wamid.R9', 'read', '2026-11-01 10:05+00', 'send');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('wamid.R9', 'read', '2026-11-01 10:05+00', 'carrier pigeon');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_message_status('wamid.R9', 'read', '2026-11-01 10:05+00', NULL);
\echo :LAST_ERROR_SQLSTATE
-- A few seconds ahead of the clock is accepted (provider clocks differ), an hour is not.
DO $$
BEGIN
  PERFORM revenue_engine.record_message_status('wamid.NEVER', 'read', clock_timestamp() + interval '1 minute');
  RAISE NOTICE 'one minute ahead: accepted';
  BEGIN
    PERFORM revenue_engine.record_message_status('wamid.NEVER', 'read', clock_timestamp() + interval '1 hour');
  EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'one hour ahead: %', SQLSTATE;
  END;
END
$$;
SELECT count(*) = :history_before AS nothing_written FROM revenue_engine.status_history;
SELECT status FROM revenue_engine.blast_recipients WHERE phone = '+15550000009';

-- Another tenant does not see this tenant's message ids: its status is parked there.
SET revenue_engine.tenant = 'other_shop';
SELECT revenue_engine.record_message_status('wamid.R9', 'read', '2026-11-01 10:05+00', 'webhook');
SELECT count(*) AS funnel_rows FROM revenue_engine.blast_funnel;
RESET revenue_engine.tenant;
SELECT tenant_id, message_id, status FROM revenue_engine.status_parked WHERE message_id = 'wamid.R9';
SELECT status FROM revenue_engine.blast_recipients WHERE phone = '+15550000009';
DELETE FROM revenue_engine.status_parked WHERE tenant_id = 'other_shop';

-- ---------------------------------------------------------------------------
-- Inbound messages and closed sales
-- ---------------------------------------------------------------------------
SELECT bt_send(:tr, '+15550000010', 'wamid.R10', '2026-11-01 10:00+00');
SELECT bt_send(:tr, '+15550000011', 'wamid.R11', '2026-11-01 10:00+00');
SET revenue_engine.reply_window = '1h';
SHOW revenue_engine.reply_window;
-- Within the window: the recipient is replied (lower stages filled), its id returned.
SELECT revenue_engine.record_inbound_message('+1 555 000 0010', '2026-11-01 10:30+00', 'webhook', '{"text": "yes please"}')
     = (SELECT id FROM revenue_engine.blast_recipients WHERE phone = '+15550000010') AS matched;
SELECT * FROM bt_state('+15550000010');
-- Again: the same recipient, a duplicate changes nothing.
SELECT revenue_engine.record_inbound_message('+15550000010', '2026-11-01 10:40+00', 'webhook')
     = (SELECT id FROM revenue_engine.blast_recipients WHERE phone = '+15550000010') AS matched;
SELECT * FROM bt_state('+15550000010');
-- Outside the window (2 hours after the send): no match, nothing changes.
SELECT revenue_engine.record_inbound_message('+15550000011', '2026-11-01 12:00+00', 'webhook') IS NULL AS unmatched;
-- Before the send: no match either.
SELECT revenue_engine.record_inbound_message('+15550000011', '2026-11-01 09:59+00', 'webhook') IS NULL AS unmatched;
SELECT * FROM bt_state('+15550000011');
-- The default window (7 days) takes it.
RESET revenue_engine.reply_window;
SHOW revenue_engine.reply_window;
SELECT revenue_engine.record_inbound_message('+15550000011', '2026-11-01 12:00+00', 'webhook')
     = (SELECT id FROM revenue_engine.blast_recipients WHERE phone = '+15550000011') AS matched;
SELECT * FROM bt_state('+15550000011');
-- No recipient of this phone, a failed recipient, a pending one: NULL.
SELECT revenue_engine.record_inbound_message('+15559999999', '2026-11-01 12:00+00') IS NULL AS unknown_phone;
SELECT revenue_engine.record_inbound_message('+15550000008', '2026-11-01 12:00+00') IS NULL AS failed_recipient;
SELECT revenue_engine.record_inbound_message('+15550000012', '2026-11-01 12:00+00') IS NULL AS pending_recipient;
SELECT * FROM bt_state('+15550000008');
-- The latest recipient sent to the phone wins: +15550000010 again in a follow-up blast.
SELECT blast_id AS tr2 FROM revenue_engine.create_blast('wa_blasts', 'transitions',
         recipients => '["+15550000010"]', message => 'Still interested?', follow_up_stage => 1,
         scheduled_for => '2030-01-16 09:00+00') \gset
SELECT bt_send(:tr2, '+15550000010', 'wamid.R10b', '2026-11-01 11:00+00');
SELECT revenue_engine.record_inbound_message('+15550000010', '2026-11-01 11:30+00')
     = (SELECT id FROM revenue_engine.blast_recipients WHERE blast_id = :tr2) AS follow_up_matched;
SELECT r.blast_id = :tr2 AS follow_up, r.status, r.replied_at - '2026-11-01 10:00+00' AS replied
  FROM revenue_engine.blast_recipients r WHERE r.phone = '+15550000010' ORDER BY r.id;
-- Bad arguments
SELECT revenue_engine.record_inbound_message(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_inbound_message('5550000010');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_inbound_message('+15550000010', '2099-01-01 00:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.record_inbound_message('+15550000010', '2026-11-01 11:30+00', 'sms');
\echo :LAST_ERROR_SQLSTATE
-- (the wording of the valid range differs between PostgreSQL versions: cut)
DO $$ BEGIN SET revenue_engine.reply_window = 0;
EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, regexp_replace(SQLERRM, ' \(.*\)$', '');
END $$;
RESET revenue_engine.reply_window;

-- mark_closed: the latest recipient sent to the phone (of the blast, if given) closed with the amount.
SELECT revenue_engine.mark_closed('+15550000005', 49.90, '2026-11-01 11:00+00', metadata => '{"order": "A-17"}')
     = (SELECT id FROM revenue_engine.blast_recipients WHERE phone = '+15550000005') AS closed;
SELECT * FROM bt_state('+15550000005');
SELECT * FROM bt_history('+15550000005');
-- A second sale on a closed recipient: the amount is replaced, the status stays, no history row.
SELECT revenue_engine.mark_closed('+15550000005', 120, '2026-11-01 12:00+00') IS NOT NULL AS closed;
SELECT status, amount, closed_at - '2026-11-01 10:00+00' AS closed
  FROM revenue_engine.blast_recipients WHERE phone = '+15550000005';
SELECT count(*) AS history_rows FROM bt_history('+15550000005');
-- Of a given blast: the older recipient of +15550000010, not the follow-up.
SELECT revenue_engine.mark_closed('+15550000010', 10, '2026-11-01 12:00+00', blast_id => :tr)
     = (SELECT id FROM revenue_engine.blast_recipients WHERE blast_id = :tr AND phone = '+15550000010') AS closed;
SELECT r.blast_id = :tr2 AS follow_up, r.status, r.amount FROM revenue_engine.blast_recipients r
 WHERE r.phone = '+15550000010' ORDER BY r.id;
-- No amount; a failed recipient that was sent can still close.
SELECT revenue_engine.mark_closed('+15550000008', occurred_at => '2026-11-01 12:00+00') IS NOT NULL AS closed;
SELECT * FROM bt_state('+15550000008');
-- Never sent, unknown phone, another blast: NULL, nothing changes.
SELECT revenue_engine.mark_closed('+15550000012', 5, '2026-11-01 12:00+00') IS NULL AS never_sent;
SELECT revenue_engine.mark_closed('+15559999999', 5, '2026-11-01 12:00+00') IS NULL AS unknown_phone;
SELECT revenue_engine.mark_closed('+15550000011', 5, '2026-11-01 12:00+00', blast_id => :tr2) IS NULL AS other_blast;
-- Bad amounts and phones
SELECT revenue_engine.mark_closed('+15550000011', -1, '2026-11-01 12:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.mark_closed('+15550000011', 'NaN', '2026-11-01 12:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.mark_closed('+15550000011', 'Infinity', '2026-11-01 12:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.mark_closed(NULL, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.mark_closed('not a phone', 5);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.mark_closed('+15550000011', 5, '2099-01-01 00:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT status, amount FROM revenue_engine.blast_recipients WHERE phone = '+15550000011';

-- ---------------------------------------------------------------------------
-- status_history: one row per change of status, append-only
-- ---------------------------------------------------------------------------
SELECT r.phone, h.old_status, h.new_status,
       CASE WHEN h.occurred_at > '2026-11-10' THEN 'now'
            ELSE (h.occurred_at - timestamptz '2026-11-01 10:00+00')::text END AS at, h.source,
       h.message_id, h.blast_id = r.blast_id AS same_blast
  FROM revenue_engine.status_history h
  JOIN revenue_engine.blast_recipients r ON r.id = h.recipient_id
 WHERE r.blast_id IN (:tr, :tr2)
 ORDER BY r.phone, h.id;
-- every recipient's latest history row names its current status
SELECT count(*) AS recipients_out_of_step
  FROM revenue_engine.blast_recipients r
 WHERE r.status <> coalesce((SELECT h.new_status FROM revenue_engine.status_history h
                              WHERE h.recipient_id = r.id ORDER BY h.id DESC LIMIT 1), 'pending');
UPDATE revenue_engine.status_history SET new_status = 'closed';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM revenue_engine.status_history;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) > 0 AS still_there FROM revenue_engine.status_history;

SELECT * FROM bt_funnel(:tr);
-- A blast is sending from its first outcome until no send is open; then
-- completed, or failed when none was sent.
SELECT b.id = :tr AS transitions, b.status, b.started_at IS NOT NULL AS started, b.completed_at IS NOT NULL AS completed
  FROM revenue_engine.blasts b WHERE b.id IN (:tr, :tr2) ORDER BY b.id;
SELECT blast_id AS nf FROM revenue_engine.create_blast('wa_blasts', 'none_sent',
         recipients => '["+15550000098", "+15550000099"]', message => 'Hi',
         scheduled_for => '2030-01-16 09:00+00') \gset
SELECT bt_fail(:nf, '+15550000098', 'HTTP 400');
SELECT status, completed_at IS NOT NULL AS completed FROM revenue_engine.blasts WHERE id = :nf;
SELECT bt_fail(:nf, '+15550000099', 'HTTP 400');
SELECT status, completed_at IS NOT NULL AS completed FROM revenue_engine.blasts WHERE id = :nf;

-- ---------------------------------------------------------------------------
-- Funnel of a blast with a hand-computed answer
-- ---------------------------------------------------------------------------
-- Ten recipients; F = +1666000000n:
--   F1, F2 pending (never sent)          F6 sent, read (delivered filled)
--   F3 sent                              F7 sent, delivered, read, replied
--   F4, F5 sent, delivered               F8 sent, delivered, read, replied, closed
--   F9 its send failed                   F10 sent, then failed
-- reached: total 10, sent 7 (F3-F8, F10), delivered 5 (F4-F8), read 3 (F6-F8),
--          replied 2 (F7, F8), closed 1 (F8), failed 2 (F9, F10)
-- stuck:   pending 2, sent 1, delivered 2, read 1, replied 1, closed 1, failed 2
SELECT blast_id AS fb FROM revenue_engine.create_blast('wa_blasts', 'autumn',
         recipients => '["+16660000001", "+16660000002", "+16660000003", "+16660000004", "+16660000005",
                         "+16660000006", "+16660000007", "+16660000008", "+16660000009", "+16660000010"]',
         message => 'Autumn offer', scheduled_for => '2030-01-20 09:00+00') \gset
SELECT * FROM bt_funnel(:fb);
-- queued 10 minutes before T0
UPDATE revenue_engine.blast_recipients SET created_at = '2026-11-01 09:50+00' WHERE blast_id = :fb;
SELECT bt_send(:fb, '+1666000000' || n, 'wamid.F' || n, '2026-11-01 10:00+00')
  FROM generate_series(3, 8) n;
SELECT bt_send(:fb, '+16660000010', 'wamid.F10', '2026-11-01 10:00+00');
SELECT bt_fail(:fb, '+16660000009', 'HTTP 400');
SELECT revenue_engine.record_message_status('wamid.F10', 'failed', '2026-11-01 10:01+00', 'webhook', '{"code": 131049}');
SELECT revenue_engine.record_message_status('wamid.F4', 'delivered', '2026-11-01 10:01+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.F5', 'delivered', '2026-11-01 10:03+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.F6', 'read', '2026-11-01 10:05+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.F7', 'delivered', '2026-11-01 10:02+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.F7', 'read', '2026-11-01 10:04+00', 'webhook');
SELECT revenue_engine.record_inbound_message('+16660000007', '2026-11-01 10:10+00') IS NOT NULL AS replied;
SELECT revenue_engine.record_message_status('wamid.F8', 'delivered', '2026-11-01 10:02+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.F8', 'read', '2026-11-01 10:03+00', 'webhook');
SELECT revenue_engine.record_inbound_message('+16660000008', '2026-11-01 10:05+00') IS NOT NULL AS replied;
SELECT revenue_engine.mark_closed('+16660000008', 250, '2026-11-01 11:05+00', blast_id => :fb) IS NOT NULL AS closed;

SELECT * FROM bt_funnel(:fb);
SELECT (total, sent, delivered, read, replied, closed, failed) = (10, 7, 5, 3, 2, 1, 2) AS as_computed_by_hand
  FROM revenue_engine.blast_funnel WHERE blast_id = :fb;
SELECT tag, blast_date, follow_up_stage, blast_status, sent_pct, delivered_pct, read_pct,
       replied_pct, closed_pct, failed_pct
  FROM revenue_engine.blast_funnel WHERE blast_id = :fb;
SELECT s.stage, s.stuck, s.stuck_pct,
       (SELECT count(*) FROM revenue_engine.blast_recipients r WHERE r.blast_id = s.blast_id AND r.status = s.stage) AS scan
  FROM revenue_engine.blast_stuck s WHERE s.blast_id = :fb
 ORDER BY array_position('{pending,sent,delivered,read,replied,closed,failed}'::text[], s.stage);
SELECT array_agg(s.stuck ORDER BY array_position('{pending,sent,delivered,read,replied,closed,failed}'::text[], s.stage))
       = '{2,1,2,1,1,1,2}' AS stuck_as_computed_by_hand
  FROM revenue_engine.blast_stuck s WHERE s.blast_id = :fb;
-- Only the counter rows are read; they are spread over funnel_slots() rows.
SELECT revenue_engine.funnel_slots() AS slots, count(*) AS counter_rows, sum(total) AS total
  FROM revenue_engine.blast_counters WHERE blast_id = :fb;

-- Time between stages (queued 10 minutes before the sends):
--   queued->sent 10 min x7; sent->delivered 1, 3, 5, 2, 2 min (median 2, p90 4.2);
--   delivered->read 0, 2, 1 min (median 1, p90 1.8); read->replied 6, 2 min
--   (median 4, p90 5.6); replied->closed 60 min.
SELECT * FROM revenue_engine.blast_stage_times(:fb);
SELECT * FROM revenue_engine.blast_stage_times(-1);

-- funnel_by_tag: a follow-up of the autumn blast, and a winter blast.
SELECT blast_id AS fb2 FROM revenue_engine.create_blast('wa_blasts', 'autumn',
         recipients => '["+16660000003", "+16660000004", "+16660000005"]',
         message => 'Last chance', follow_up_stage => 1, scheduled_for => '2030-02-10 09:00+00') \gset
SELECT bt_send(:fb2, '+16660000003', 'wamid.G3', '2026-11-02 10:00+00');
SELECT revenue_engine.record_message_status('wamid.G3', 'delivered', '2026-11-02 10:01+00', 'webhook');
SELECT bt_send(:fb2, '+16660000004', 'wamid.G4', '2026-11-02 10:00+00');
SELECT blast_id AS wb FROM revenue_engine.create_blast('wa_blasts', 'winter',
         recipients => '["+17770000001", "+17770000002"]',
         message => 'Winter', scheduled_for => '2030-03-01 09:00+00') \gset
SELECT bt_send(:wb, '+17770000001', 'wamid.W1', '2026-11-03 10:00+00');
SELECT revenue_engine.record_message_status('wamid.W1', 'read', '2026-11-03 10:01+00', 'webhook');
SELECT * FROM revenue_engine.funnel_by_tag('autumn');
SELECT * FROM revenue_engine.funnel_by_tag('autumn', '2030-01-01', '2030-01-31');
SELECT * FROM revenue_engine.funnel_by_tag('autumn', '2030-01-21');
SELECT * FROM revenue_engine.funnel_by_tag('autumn', to_date => '2030-01-20');
SELECT * FROM revenue_engine.funnel_by_tag(NULL, '2030-01-20', '2030-03-01');
SELECT * FROM revenue_engine.funnel_by_tag('winter', '2030-03-02');
SELECT * FROM revenue_engine.funnel_by_tag('no_such_tag');
-- the sums equal the per-blast funnels
SELECT t.tag, t.follow_up_stage, t.blasts,
       (t.blasts, t.total, t.sent, t.delivered, t.read, t.replied, t.closed, t.failed)
       = (s.blasts, s.total, s.sent, s.delivered, s.read, s.replied, s.closed, s.failed) AS sums_match
  FROM revenue_engine.funnel_by_tag() t
  CROSS JOIN LATERAL (
       SELECT count(*) AS blasts, sum(f.total) AS total, sum(f.sent) AS sent, sum(f.delivered) AS delivered,
              sum(f.read) AS read, sum(f.replied) AS replied, sum(f.closed) AS closed, sum(f.failed) AS failed
         FROM revenue_engine.blast_funnel f
        WHERE f.tag = t.tag AND f.follow_up_stage = t.follow_up_stage) s
 ORDER BY 1, 2;

-- Every blast so far: counters equal to the scan.
SELECT * FROM bt_counter_drift;

-- Deleting recipients and blasts keeps the counters equal to the scan.
DELETE FROM revenue_engine.blast_recipients WHERE blast_id = :fb AND phone IN ('+16660000002', '+16660000010', '+16660000008');
SELECT * FROM bt_funnel(:fb);
SELECT * FROM bt_counter_drift;
DELETE FROM revenue_engine.blast_recipients WHERE phone LIKE '+1666%' AND status = 'sent';
SELECT * FROM bt_funnel(:fb);
SELECT * FROM bt_funnel(:fb2);
DELETE FROM revenue_engine.blasts WHERE id = :fb2;
SELECT count(*) AS counters_of_deleted_blast FROM revenue_engine.blast_counters WHERE blast_id = :fb2;
SELECT * FROM revenue_engine.funnel_by_tag('autumn');
SELECT * FROM bt_counter_drift;
-- A recipient moved to another blast leaves one funnel for the other.
UPDATE revenue_engine.blast_recipients SET blast_id = :wb WHERE blast_id = :fb AND phone = '+16660000007';
SELECT * FROM bt_funnel(:fb);
SELECT * FROM bt_funnel(:wb);
SELECT * FROM bt_counter_drift;
-- A whole blast's recipients at once, in one statement
DELETE FROM revenue_engine.blast_recipients WHERE blast_id = :fb;
SELECT * FROM bt_funnel(:fb);
SELECT * FROM bt_counter_drift;

-- The drift check does see drift: one counter off by one, rolled back.
BEGIN;
UPDATE revenue_engine.blast_counters SET delivered = delivered + 1 WHERE blast_id = :wb AND slot = 0;
SELECT blast_id = :wb AS drifted_is_winter, counted_blast = :wb AS counted FROM bt_counter_drift;
ROLLBACK;
SELECT * FROM bt_counter_drift;

-- TRUNCATE empties every blast's counters.
TRUNCATE revenue_engine.blast_recipients;
SELECT count(*) AS blasts, sum(total) AS total, sum(sent) AS sent, sum(failed) AS failed
  FROM revenue_engine.blast_funnel;
SELECT * FROM bt_counter_drift;

-- Leave no parked status behind for the next test.
DELETE FROM revenue_engine.status_parked WHERE message_id = 'wamid.NEVER';
SELECT count(*) AS parked FROM revenue_engine.status_parked;
