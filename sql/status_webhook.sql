-- Provider callbacks: ingest_status_webhook verifies the signature (WhatsApp
-- Cloud API's X-Hub-Signature-256, or Standard Webhooks), then applies every
-- status and inbound message of the body, one result row per item.
--
-- Signatures are computed here with pgcrypto.  Times inside the bodies are
-- fixed instants around T0 = 2026-11-01 10:00 UTC (Unix 1793527200), in the
-- past of the real clock they are checked against; Standard Webhooks'
-- webhook-timestamp is checked against revenue_engine.clock_override
-- (2026-11-20 12:00 UTC = 1795176000 for this database, see setup.sql).
-- Nothing is sent: the channels are disabled and the blasts are due in 2030.
\c
\set SHOW_CONTEXT never
-- Times in UTC, as the comments give them.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- The worker's part: claim a recipient's send, then record it sent with a message id.
CREATE FUNCTION sw_land(p_blast bigint, p_phone text, p_message_id text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    rid bigint := (SELECT r.id FROM revenue_engine.blast_recipients r
                    WHERE r.blast_id = p_blast AND r.phone = p_phone);
BEGIN
    UPDATE revenue_engine.sends SET status = 'sending', attempts = attempts + 1
     WHERE blast_id = p_blast AND recipient_id = rid;
    UPDATE revenue_engine.sends
       SET status = 'sent', sent_at = '2026-11-01 10:00+00', provider_message_id = p_message_id,
           response_status = 200,
           response_body = '{"messaging_product": "whatsapp", "messages": [{"id": "' || p_message_id || '"}]}'
     WHERE blast_id = p_blast AND recipient_id = rid;
    RETURN (SELECT r.status FROM revenue_engine.blast_recipients r WHERE r.id = rid);
END
$$;
-- Status and stage times of a blast's recipients, as offsets from T0.
CREATE FUNCTION sw_states(p_blast bigint)
RETURNS TABLE (phone text, message_id text, status text, sent interval, delivered interval,
               read interval, replied interval, failed interval, error jsonb)
LANGUAGE sql AS $$
  SELECT r.phone, r.provider_message_id, r.status, r.sent_at - t0, r.delivered_at - t0,
         r.read_at - t0, r.replied_at - t0, r.failed_at - t0, r.error
    FROM revenue_engine.blast_recipients r, (SELECT timestamptz '2026-11-01 10:00+00' AS t0) c
   WHERE r.blast_id = p_blast ORDER BY r.phone
$$;
-- Callback bodies exactly as received (the signature covers every byte).
CREATE TABLE sw_bodies (name text PRIMARY KEY, body text NOT NULL);
-- WhatsApp: X-Hub-Signature-256 = sha256=<hex HMAC-SHA256 of the body with the app secret>
CREATE FUNCTION sw_wa_headers(p_body text, p_secret text DEFAULT 'meta-app-secret-7f3a9c2e5b')
RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('Content-Type', 'application/json',
                            'X-Hub-Signature-256', 'sha256=' || encode(hmac(p_body, p_secret, 'sha256'), 'hex'))
$$;
-- Standard Webhooks: v1,<base64 HMAC-SHA256 of "id.timestamp.body" with the decoded whsec_ key>
CREATE FUNCTION sw_std_signature(p_id text, p_ts text, p_body text,
                                 p_key text DEFAULT 'cmV2ZW51ZS1lbmdpbmUtc3RhdHVzLXRlc3Qta2V5ISE=')
RETURNS text LANGUAGE sql AS $$
  SELECT 'v1,' || encode(hmac(convert_to(p_id || '.' || p_ts || '.' || p_body, 'UTF8'),
                              decode(p_key, 'base64'), 'sha256'), 'base64')
$$;
CREATE FUNCTION sw_std_headers(p_id text, p_ts text, p_body text)
RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('webhook-id', p_id, 'webhook-timestamp', p_ts,
                            'webhook-signature', sw_std_signature(p_id, p_ts, p_body))
$$;

-- ---------------------------------------------------------------------------
-- Configuring a channel's callbacks
-- ---------------------------------------------------------------------------
SELECT revenue_engine.create_channel('wa_cloud', 'https://graph.facebook.com/v19.0/106540352242922/messages',
         headers => '{"Authorization": "Bearer EAAG"}', body_template => '{"messaging_product": "whatsapp"}',
         message_id_path => '{messages,0,id}', enabled => false) > 0 AS created;
SELECT revenue_engine.create_channel('sms_gateway', 'https://api.sms.example.com/v1/messages',
         message_id_path => '{id}', enabled => false) > 0 AS created;
-- No webhook configured yet
SELECT * FROM revenue_engine.ingest_status_webhook('wa_cloud', '{}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_channel_status_source('wa_cloud', webhook_kind => 'whatsapp',
         webhook_secret => 'meta-app-secret-7f3a9c2e5b');
SELECT revenue_engine.set_channel_status_source('sms_gateway', webhook_kind => 'standard_webhooks',
         webhook_secret => 'whsec_' || encode(convert_to('revenue-engine-status-test-key!!', 'UTF8'), 'base64'),
         status_map => '{"DELIVRD": "delivered", "undelivered": "failed", "queued": "pending"}');
SELECT name, webhook_kind, status_map FROM revenue_engine.channels_public
 WHERE name IN ('wa_cloud', 'sms_gateway') ORDER BY name;
-- Bad settings
SELECT revenue_engine.set_channel_status_source('wa_cloud', webhook_kind => 'slack', webhook_secret => 'meta-app-secret-7f3a9c2e5b');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_channel_status_source('wa_cloud', webhook_kind => 'whatsapp');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_channel_status_source('wa_cloud', webhook_kind => 'whatsapp', webhook_secret => 'short');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_channel_status_source('sms_gateway', webhook_kind => 'standard_webhooks', webhook_secret => 'not-whsec');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_channel_status_source('wa_cloud', webhook_kind => 'whatsapp',
         webhook_secret => 'meta-app-secret-7f3a9c2e5b', status_map => '{"seen": "replied"}');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_channel_status_source('no_such_channel', webhook_kind => 'whatsapp',
         webhook_secret => 'meta-app-secret-7f3a9c2e5b');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_channel_status_source(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT name, webhook_kind, status_map FROM revenue_engine.channels_public
 WHERE name IN ('wa_cloud', 'sms_gateway') ORDER BY name;

-- A blast on the WhatsApp channel; every send but the last one has landed.
SELECT blast_id AS wa FROM revenue_engine.create_blast('wa_cloud', 'webhook_demo',
         recipients => '["+60123456701", "+60123456702", "+60123456703", "+60123456704",
                         "+60123456705", "+60123456706", "+60123456707"]',
         message => 'Selamat datang!', scheduled_for => '2030-02-01 09:00+00') \gset
SELECT sw_land(:wa, '+6012345670' || n, 'wamid.HBgLNjAxMjM0NTY3MF' || n || 'VAgARGBI')
  FROM generate_series(1, 6) n;

-- ---------------------------------------------------------------------------
-- WhatsApp Cloud API
-- ---------------------------------------------------------------------------
INSERT INTO sw_bodies VALUES ('wa_batch', $body${
  "object": "whatsapp_business_account",
  "entry": [
    {
      "id": "102290129340398",
      "changes": [
        {
          "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "statuses": [
              {"id": "wamid.HBgLNjAxMjM0NTY3MF1VAgARGBI", "status": "sent", "timestamp": "1793527205",
               "recipient_id": "60123456701",
               "conversation": {"id": "4f0e6b2f2c3c1c0f5e3b8d7a9c6e1a2b", "expiration_timestamp": "1793613600",
                                "origin": {"type": "marketing"}},
               "pricing": {"billable": true, "pricing_model": "CBP", "category": "marketing"}},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF1VAgARGBI", "status": "delivered", "timestamp": "1793527260",
               "recipient_id": "60123456701",
               "conversation": {"id": "4f0e6b2f2c3c1c0f5e3b8d7a9c6e1a2b", "origin": {"type": "marketing"}},
               "pricing": {"billable": true, "pricing_model": "CBP", "category": "marketing"}},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF2VAgARGBI", "status": "read", "timestamp": "1793527320",
               "recipient_id": "60123456702"},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF3VAgARGBI", "status": "failed", "timestamp": "1793527260",
               "recipient_id": "60123456703",
               "errors": [{"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
                           "error_data": {"details": "Message Undeliverable."}}]},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF4VAgARGBI", "status": "deleted", "timestamp": "1793527260",
               "recipient_id": "60123456704"},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF4VAgARGBI", "status": "delivered", "timestamp": "4102444799",
               "recipient_id": "60123456704"},
              {"status": "delivered", "timestamp": "1793527260", "recipient_id": "60123456704"},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF5VAgARGBI", "status": "played", "timestamp": "1793527380",
               "recipient_id": "60123456705"},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF7VAgARGBI", "status": "delivered", "timestamp": "1793527260",
               "recipient_id": "60123456707"},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF6VAgARGBI", "status": "delivered", "timestamp": "946684799",
               "recipient_id": "60123456706"},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF6VAgARGBI", "status": "delivered", "timestamp": "2026-11-01T10:04:00Z",
               "recipient_id": "60123456706"},
              {"id": "wamid.HBgLNjAxMjM0NTY3MF6VAgARGBI", "status": "read", "recipient_id": "60123456706"}
            ],
            "contacts": [{"profile": {"name": "Aisyah"}, "wa_id": "60123456702"}],
            "messages": [
              {"from": "60123456702", "id": "wamid.HBgLNjAxMjM0NTY3MDIVAgASGCA1", "timestamp": "1793527500",
               "context": {"from": "15550783881", "id": "wamid.HBgLNjAxMjM0NTY3MF2VAgARGBI"},
               "type": "text", "text": {"body": "Yes, I'm interested!"}},
              {"from": "60123456704", "id": "wamid.HBgLNjAxMjM0NTY3MDQVAgASGCA2", "timestamp": "1793527500",
               "type": "text", "text": {"body": "How much?"}},
              {"from": "447700900999", "id": "wamid.HBgMNDQ3NzAwOTAwOTk5FQIAEhggMw", "timestamp": "1793527500",
               "type": "text", "text": {"body": "Who is this?"}},
              {"from": "not-a-number", "id": "wamid.bad", "timestamp": "1793527500",
               "type": "text", "text": {"body": "?"}}
            ]
          },
          "field": "messages"
        }
      ]
    }
  ]
}$body$);

-- Signed with the app secret: one row per status, then per message.
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'wa_batch';
SELECT * FROM sw_states(:wa);
SELECT message_id, status, occurred_at - '2026-11-01 10:00+00' AS at, source,
       raw->>'recipient_id' AS raw_recipient
  FROM revenue_engine.status_parked;
-- History rows keep the provider's item (conversation, pricing) as metadata.
SELECT r.phone, h.old_status, h.new_status, h.occurred_at - '2026-11-01 10:00+00' AS at, h.source,
       h.metadata->'pricing'->>'category' AS pricing, h.metadata->'text'->>'body' AS text
  FROM revenue_engine.status_history h JOIN revenue_engine.blast_recipients r ON r.id = h.recipient_id
 WHERE r.blast_id = :wa AND h.source = 'webhook' ORDER BY r.phone, h.id;
-- The parked status is applied when the last send lands its id.
SELECT sw_land(:wa, '+60123456707', 'wamid.HBgLNjAxMjM0NTY3MF7VAgARGBI');
SELECT * FROM sw_states(:wa) WHERE phone = '+60123456707';
SELECT count(*) AS parked FROM revenue_engine.status_parked;

-- The provider retries the same callback: nothing changes.
SELECT count(*) AS history_before FROM revenue_engine.status_history \gset
SELECT w.item, w.message_id, w.result FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'wa_batch';
SELECT count(*) = :history_before AS no_new_history FROM revenue_engine.status_history;

-- Signatures that do not verify: 28000, and nothing of the body is applied.
INSERT INTO sw_bodies VALUES ('wa_read', '{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"statuses":[{"id":"wamid.HBgLNjAxMjM0NTY3MF1VAgARGBI","status":"read","timestamp":"1793527440","recipient_id":"60123456701"},{"id":"wamid.NOT-LANDED","status":"read","timestamp":"1793527440","recipient_id":"60123456799"}]},"field":"messages"}]}]}');
-- another app's secret
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body, 'another-app-secret-0000'), b.body) w
 WHERE b.name = 'wa_read';
\echo :LAST_ERROR_SQLSTATE
-- no signature header
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', '{"Content-Type": "application/json"}', b.body) w
 WHERE b.name = 'wa_read';
\echo :LAST_ERROR_SQLSTATE
-- a body changed after signing (read -> delivered)
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body),
                                                    replace(b.body, '"read"', '"delivered"')) w
 WHERE b.name = 'wa_read';
\echo :LAST_ERROR_SQLSTATE
-- a trailing newline is a different body
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body || E'\n') w
 WHERE b.name = 'wa_read';
\echo :LAST_ERROR_SQLSTATE
-- not sha256=<64 hex digits>
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud',
         jsonb_build_object('X-Hub-Signature', 'sha1=' || encode(hmac(b.body, 'meta-app-secret-7f3a9c2e5b', 'sha1'), 'hex'),
                            'X-Hub-Signature-256', 'sha1=' || encode(hmac(b.body, 'meta-app-secret-7f3a9c2e5b', 'sha1'), 'hex')),
         b.body) w
 WHERE b.name = 'wa_read';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', '{"X-Hub-Signature-256": "sha256=abc"}', b.body) w
 WHERE b.name = 'wa_read';
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM sw_states(:wa) WHERE phone = '+60123456701';
SELECT count(*) AS parked FROM revenue_engine.status_parked;
SELECT count(*) = :history_before AS no_new_history FROM revenue_engine.status_history;
-- Header names are matched case-blind (frameworks lower-case them); the
-- signature's hex digits too.  Now it applies.
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud',
         jsonb_build_object('x-hub-signature-256',
                            'sha256=' || upper(encode(hmac(b.body, 'meta-app-secret-7f3a9c2e5b', 'sha256'), 'hex'))),
         b.body) w
 WHERE b.name = 'wa_read';
SELECT * FROM sw_states(:wa) WHERE phone = '+60123456701';
DELETE FROM revenue_engine.status_parked WHERE message_id = 'wamid.NOT-LANDED';

-- Malformed bodies (correctly signed): an error, nothing applied.
INSERT INTO sw_bodies VALUES
  ('not_json', 'statuses=delivered&id=wamid.1'),
  ('array', '[{"object": "whatsapp_business_account"}]'),
  ('no_entry', '{"object": "whatsapp_business_account"}'),
  ('entry_not_array', '{"object": "whatsapp_business_account", "entry": {"changes": []}}'),
  ('no_changes', '{"object": "whatsapp_business_account", "entry": [{"id": "102290129340398"}]}'),
  ('no_value', '{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages"}]}]}'),
  ('other_field', '{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}]}]}'),
  ('bad_items', '{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {"statuses": ["wamid.1", {"id": "wamid.HBgLNjAxMjM0NTY3MF1VAgARGBI"}, {"id": 42, "status": "read"}], "messages": [7, {"id": "wamid.x", "timestamp": "1793527500"}]}}]}]}');
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'not_json';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'array';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'no_entry';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'entry_not_array';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'no_changes';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'no_value';
\echo :LAST_ERROR_SQLSTATE
-- Other webhook fields carry no statuses: no rows, no error.
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'other_field';
-- Items of the wrong shape are rejected one by one.
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'bad_items';
SELECT count(*) = :history_before + 1 AS only_the_read_applied FROM revenue_engine.status_history;

-- Bad arguments
SELECT * FROM revenue_engine.ingest_status_webhook(NULL, '{}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM revenue_engine.ingest_status_webhook('wa_cloud', NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM revenue_engine.ingest_status_webhook('wa_cloud', '{}', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM revenue_engine.ingest_status_webhook('wa_cloud', '["X-Hub-Signature-256"]', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM revenue_engine.ingest_status_webhook('wa_cloud', '{"X-Hub-Signature-256": 42}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM revenue_engine.ingest_status_webhook('no_such_channel', '{}', '{}');
\echo :LAST_ERROR_SQLSTATE

-- ---------------------------------------------------------------------------
-- Standard Webhooks (a generic provider): statuses[], messages[], or one status
-- ---------------------------------------------------------------------------
SELECT blast_id AS sms FROM revenue_engine.create_blast('sms_gateway', 'sms_demo',
         recipients => '["+447700900001", "+447700900002", "+447700900003"]',
         message => 'Your code is ready', scheduled_for => '2030-02-01 09:00+00') \gset
SELECT sw_land(:sms, '+44770090000' || n, 'SM' || n || 'f6a1c9e2') FROM generate_series(1, 3) n;
SHOW revenue_engine.clock_override;
INSERT INTO sw_bodies VALUES
  ('std_batch', '{"statuses": [{"message_id": "SM1f6a1c9e2", "status": "DELIVRD", "timestamp": "2026-11-01T10:01:00Z"}, {"message_id": "SM2f6a1c9e2", "status": "undelivered", "timestamp": 1793527260, "error": {"code": 30003, "message": "Unreachable destination handset"}}, {"message_id": "SM3f6a1c9e2", "status": "queued", "timestamp": 1793527210}, {"message_id": "SM3f6a1c9e2", "status": "bounced", "timestamp": 1793527210}], "messages": [{"from": "+447700900001", "id": "in-1", "timestamp": 1793527500, "context_message_id": "SM1f6a1c9e2", "text": "STOP"}]}'),
  ('std_one', '{"message_id": "SM3f6a1c9e2", "status": "read", "timestamp": 1793527300}');
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_2KWPBgLlAfxdpx2AI54pPJ85f4W', '1795176000', b.body), b.body) w
 WHERE b.name = 'std_batch';
SELECT * FROM sw_states(:sms);

-- webhook-timestamp more than 5 minutes from clock_override (before or after): a replay, 28000.
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_one', '1795175699', b.body), b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_one', '1795176301', b.body), b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
-- not whole seconds
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_one', '1795176000.5', b.body), b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
-- a header missing
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_one', '1795176000', b.body) - 'webhook-id', b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
-- signed with another id, timestamp or body than the ones given
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_one', '1795176000', b.body) || '{"webhook-id": "msg_two"}', b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_one', '1795176000', b.body) || '{"webhook-timestamp": "1795176001"}', b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_one', '1795176000', b.body), replace(b.body, 'read', 'sent')) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 jsonb_build_object('webhook-id', 'msg_one', 'webhook-timestamp', '1795176000',
                                    'webhook-signature', 'v1,' || encode(hmac('msg_one.1795176000.' || b.body, 'revenue-engine-status-test-key!!', 'sha1'), 'base64')),
                 b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
SELECT status FROM revenue_engine.blast_recipients WHERE blast_id = :sms AND phone = '+447700900003';
-- Exactly 5 minutes old is still taken; with several signatures (key
-- rotation) any one that verifies is enough; header names case-blind.
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 jsonb_build_object('Webhook-Id', 'msg_one', 'Webhook-Timestamp', '1795175700',
                                    'Webhook-Signature', 'v1,bm90IHRoZSByaWdodCBzaWduYXR1cmUgYXQgYWxsIQ== '
                                                         || sw_std_signature('msg_one', '1795175700', b.body)),
                 b.body) w
 WHERE b.name = 'std_one';
SELECT * FROM sw_states(:sms) WHERE phone = '+447700900003';
-- clock_override moves "now": the timestamp that was fresh is stale, and a new one is fresh.
SET revenue_engine.clock_override = '2026-11-21 00:00:00+00';
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_one', '1795176000', b.body), b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
SELECT w.item, w.result FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway',
                 sw_std_headers('msg_one', extract(epoch FROM timestamptz '2026-11-21 00:00:00+00')::bigint::text, b.body), b.body) w
 WHERE b.name = 'std_one';
RESET revenue_engine.clock_override;

-- Malformed generic bodies
INSERT INTO sw_bodies VALUES
  ('std_array', '[{"message_id": "SM1f6a1c9e2", "status": "read"}]'),
  ('std_nothing', '{"event": "message.status"}'),
  ('std_statuses_object', '{"statuses": {"message_id": "SM1f6a1c9e2"}}'),
  ('std_messages_string', '{"messages": "in-1"}');
SELECT b.name, w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway', sw_std_headers('msg_x', '1795176000', b.body), b.body) w
 WHERE b.name = 'std_array';
\echo :LAST_ERROR_SQLSTATE
SELECT b.name, w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway', sw_std_headers('msg_x', '1795176000', b.body), b.body) w
 WHERE b.name = 'std_nothing';
\echo :LAST_ERROR_SQLSTATE
SELECT b.name, w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway', sw_std_headers('msg_x', '1795176000', b.body), b.body) w
 WHERE b.name = 'std_statuses_object';
\echo :LAST_ERROR_SQLSTATE
SELECT b.name, w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway', sw_std_headers('msg_x', '1795176000', b.body), b.body) w
 WHERE b.name = 'std_messages_string';
\echo :LAST_ERROR_SQLSTATE
-- A Standard Webhooks signature does not open the WhatsApp channel, nor the reverse.
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('wa_cloud', sw_std_headers('msg_one', '1795176000', b.body), b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE
SELECT w.* FROM sw_bodies b,
       LATERAL revenue_engine.ingest_status_webhook('sms_gateway', sw_wa_headers(b.body), b.body) w
 WHERE b.name = 'std_one';
\echo :LAST_ERROR_SQLSTATE

-- Both blasts' counters equal a scan of their recipients.
SELECT f.tag, f.total, f.sent, f.delivered, f.read, f.replied, f.closed, f.failed,
       (f.total, f.sent, f.delivered, f.read, f.replied, f.closed, f.failed)
       = (s.total, s.sent, s.delivered, s.read, s.replied, s.closed, s.failed) AS equals_scan
  FROM revenue_engine.blast_funnel f
  CROSS JOIN LATERAL (
       SELECT count(*) AS total, count(r.sent_at) AS sent, count(r.delivered_at) AS delivered,
              count(r.read_at) AS read, count(r.replied_at) AS replied, count(r.closed_at) AS closed,
              count(*) FILTER (WHERE r.status = 'failed') AS failed
         FROM revenue_engine.blast_recipients r WHERE r.blast_id = f.blast_id) s
 WHERE f.blast_id IN (:wa, :sms) ORDER BY f.blast_id;
