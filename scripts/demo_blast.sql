-- revenue_engine demo, part 2: a WhatsApp blast to a local fake provider, the
-- provider's signed status callbacks (out of order, with a duplicate), a
-- reply and a sale; the funnel is read from counters, not by scanning.
\set QUIET on
\pset footer off
\set app_secret 'demo-app-secret-0123456789'

\echo '\n-- A WhatsApp channel (the fake provider answers each send with a message id),'
\echo '-- signed callbacks verified with the app secret.'
SELECT revenue_engine.create_channel('whatsapp', :'provider',
         body_template => '{"messaging_product": "whatsapp"}',
         message_id_path => '{messages,0,id}', rate_limit => 50) AS channel_id;
SELECT revenue_engine.set_channel_status_source('whatsapp',
         webhook_kind => 'whatsapp', webhook_secret => :'app_secret');

\echo '\n-- A blast to five numbers: one is written twice, one is not E.164.'
SELECT * FROM revenue_engine.create_blast('whatsapp', 'black-friday',
         '[{"phone": "+60 12-345 6701", "name": "Aina"}, {"phone": "+60123456702", "name": "Ben"},
           {"phone": "+60123456703", "name": "Chen"}, {"phone": "+60123456704", "name": "Devi"},
           {"phone": "+60123456701", "name": "Aina again"}, {"phone": "0123456705", "name": "Eli"}]',
         message => 'Hi {{name}}, 30% off today only', on_invalid => 'skip');
SELECT position, input, reason FROM revenue_engine.blast_rejections;

\echo '\n-- The worker sends them; each message id lands on its recipient.'
DO $$
BEGIN
    FOR i IN 1 .. 100 LOOP
        EXIT WHEN (SELECT status FROM revenue_engine.blasts) = 'completed';
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT id, phone, name, status, provider_message_id FROM revenue_engine.blast_recipients ORDER BY id;

\echo '\n-- The provider calls back: Aina read (before her delivered arrives), Ben delivered,'
\echo '-- Chen failed, Devi''s delivered twice; Aina replies and buys.'
CREATE EXTENSION pgcrypto;
CREATE TEMP TABLE cb AS
SELECT jsonb_build_object('object', 'whatsapp_business_account', 'entry', jsonb_build_array(
         jsonb_build_object('id', '1029384756', 'changes', jsonb_build_array(jsonb_build_object(
           'field', 'messages',
           'value', jsonb_build_object(
             'messaging_product', 'whatsapp',
             'metadata', jsonb_build_object('display_phone_number', '60300000000', 'phone_number_id', '1122334455'),
             'statuses', (SELECT jsonb_agg(jsonb_build_object(
                            'id', r.provider_message_id, 'status', s.status,
                            'timestamp', extract(epoch FROM now() - s.ago)::bigint::text,
                            'recipient_id', substr(r.phone, 2))
                            || CASE WHEN s.status = 'failed' THEN jsonb_build_object('errors', jsonb_build_array(
                                 jsonb_build_object('code', 131026, 'title', 'Message undeliverable'))) ELSE '{}' END
                            ORDER BY s.ord)
                            FROM (VALUES (1, 1, 'read', interval '1 minute'), (2, 1, 'delivered', interval '2 minutes'),
                                         (3, 2, 'delivered', interval '2 minutes'), (4, 3, 'failed', interval '2 minutes'),
                                         (5, 4, 'delivered', interval '1 minute'), (6, 4, 'delivered', interval '1 minute'))
                                 AS s(ord, n, status, ago)
                            JOIN (SELECT row_number() OVER (ORDER BY id) AS n, * FROM revenue_engine.blast_recipients) r
                              ON r.n = s.n),
             'messages', jsonb_build_array(jsonb_build_object(
                            'from', '60123456701', 'id', 'wamid.inbound1', 'type', 'text',
                            'timestamp', extract(epoch FROM now())::bigint::text,
                            'text', jsonb_build_object('body', 'Yes please!')))))))))::text AS body;
SELECT item, kind, status, result, reason
  FROM cb, revenue_engine.ingest_status_webhook('whatsapp',
         jsonb_build_object('X-Hub-Signature-256', 'sha256=' || encode(hmac(cb.body, :'app_secret', 'sha256'), 'hex')),
         cb.body);
SELECT revenue_engine.mark_closed('+60123456701', amount => 249.00) AS closed_recipient;

\echo '\n-- A callback with a wrong signature is refused, nothing applied:'
\set ON_ERROR_STOP off
SELECT * FROM cb, revenue_engine.ingest_status_webhook('whatsapp',
         '{"X-Hub-Signature-256": "sha256=0000000000000000000000000000000000000000000000000000000000000000"}', cb.body);
\set ON_ERROR_STOP on

\echo '\n-- The funnel (cumulative: read counts those who went on to reply) and where recipients stopped.'
SELECT tag, total, sent, delivered, read, replied, closed, failed, delivered_pct, read_pct, closed_pct
  FROM revenue_engine.blast_funnel;
SELECT stage, stuck, stuck_pct FROM revenue_engine.blast_stuck WHERE stuck > 0;
\echo '\n-- Every status item, with its source and result (a duplicate that carried the provider''s data is kept too).'
SELECT r.name, h.old_status, h.new_status, h.source, h.result
  FROM revenue_engine.status_history h JOIN revenue_engine.blast_recipients r ON r.id = h.recipient_id
 ORDER BY h.id;
