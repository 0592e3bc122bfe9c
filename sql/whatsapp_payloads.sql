-- Inbound WhatsApp Cloud API callbacks as WhatsApp really sends them, written
-- after the payloads the public SDKs keep as test data (the repository and
-- file are named above each one; ids, numbers and times are ours), each with
-- the result a user expects; then the rules every callback obeys: per item
-- timestamps whatever the session's DateStyle and TimeZone, parked statuses
-- capped and expiring, UTF-8 message ids kept byte for byte.
--
-- Our messages are sent at T0 = 2026-11-01 10:00 UTC (Unix 1793527200); the
-- callbacks come minutes later.  The tenant is this file's own.
\c
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
CREATE EXTENSION IF NOT EXISTS pgcrypto;
SET revenue_engine.tenant = 'wa_payloads';

-- The worker's part: the send of a recipient of a blast lands with a message id at T0.
CREATE FUNCTION wp_land(p_blast bigint, p_phone text, p_message_id text)
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
           response_body = jsonb_build_object('messaging_product', 'whatsapp',
                                              'messages', jsonb_build_array(jsonb_build_object('id', p_message_id)))::text
     WHERE blast_id = p_blast AND recipient_id = rid;
    RETURN (SELECT r.status FROM revenue_engine.blast_recipients r WHERE r.id = rid);
END
$$;
-- A callback as WhatsApp posts it: the value of one change, signed with the app secret.
CREATE FUNCTION wp_body(p_value jsonb) RETURNS text LANGUAGE sql AS $$
  SELECT jsonb_build_object('object', 'whatsapp_business_account',
           'entry', jsonb_build_array(jsonb_build_object('id', '102290129340398',
             'changes', jsonb_build_array(jsonb_build_object('field', 'messages', 'value', p_value)))))::text
$$;
CREATE FUNCTION wp_post(p_value jsonb)
RETURNS TABLE (item integer, kind text, message_id text, status text, result text, reason text)
LANGUAGE sql AS $$
  SELECT w.* FROM (SELECT wp_body(p_value) AS body) b,
         LATERAL revenue_engine.ingest_status_webhook('wa', jsonb_build_object('X-Hub-Signature-256',
                   'sha256=' || encode(hmac(b.body, 'wp-app-secret-5b8e1d7c', 'sha256'), 'hex')), b.body) w
$$;
-- Recipients' statuses and stage times as offsets from T0.
CREATE FUNCTION wp_states()
RETURNS TABLE (blast text, phone text, status text, sent interval, delivered interval, read interval,
               replied interval, failed interval)
LANGUAGE sql AS $$
  SELECT b.tag, r.phone, r.status, r.sent_at - t0, r.delivered_at - t0, r.read_at - t0,
         r.replied_at - t0, r.failed_at - t0
    FROM revenue_engine.blast_recipients r JOIN revenue_engine.blasts b ON b.tenant_id = r.tenant_id AND b.id = r.blast_id,
         (SELECT timestamptz '2026-11-01 10:00+00' AS t0) c
   WHERE r.tenant_id = 'wa_payloads' ORDER BY b.tag, r.phone
$$;

SELECT revenue_engine.create_channel('wa', 'https://graph.facebook.com/v21.0/1122334455667/messages',
         headers => '{"Authorization": "Bearer EAAG"}', body_template => '{"messaging_product": "whatsapp"}',
         message_id_path => '{messages,0,id}', enabled => false) > 0 AS created;
SELECT revenue_engine.set_channel_status_source('wa', webhook_kind => 'whatsapp',
         webhook_secret => 'wp-app-secret-5b8e1d7c');
-- Two blasts: +972987654321 got both (the older one first), the others one each.
SELECT blast_id AS older FROM revenue_engine.create_blast('wa', 'older',
         recipients => '["+972987654321"]', message => 'Shalom!', scheduled_for => '2030-01-01 09:00+00') \gset
SELECT blast_id AS promo FROM revenue_engine.create_blast('wa', 'promo',
         recipients => '["+972987654321", "+972987654322", "+972987654323", "+972987654324",
                         "+972987654325", "+972987654326", "+972987654327", "+972987654328"]',
         message => 'Sale!', scheduled_for => '2030-01-01 09:00+00') \gset
SELECT wp_land(:older, '+972987654321', 'wamid.OLDER1');
-- the promo lands later than the older blast, so it is the phone's latest
UPDATE revenue_engine.sends SET status = 'sending' WHERE blast_id = :promo;
UPDATE revenue_engine.sends s
   SET status = 'sent', sent_at = '2026-11-01 10:00:01+00', response_status = 200,
       provider_message_id = 'wamid.PROMO' || right(r.phone, 1)
  FROM revenue_engine.blast_recipients r
 WHERE s.blast_id = :promo AND r.id = s.recipient_id;
SELECT blast, phone, status FROM wp_states();

-- ===========================================================================
-- Statuses
-- ===========================================================================

-- david-lev/pywa tests/data/updates/message_status.json "sent": a sent status
-- with conversation and pricing.  The send already made the recipient sent:
-- duplicate, and the provider's data is kept in status_history.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654322",
                "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}],
  "statuses": [{"id": "wamid.PROMO2", "status": "sent", "timestamp": "1793527230",
                "recipient_id": "972987654322",
                "conversation": {"id": "7270432eae37498234f4444b35ffc5", "expiration_timestamp": "1793613600",
                                 "origin": {"type": "marketing"}},
                "pricing": {"billable": true, "pricing_model": "CBP", "category": "marketing"}}]
}$$);
-- david-lev/pywa tests/data/updates/message_status.json "with_tracker", and
-- Secreto31126/whatsapp-api-js test/webhooks.mocks.js StatusWebhookMock
-- (conversation, pricing, biz_opaque_callback_data): a delivered status that
-- carries the business's tracker.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "statuses": [{"id": "wamid.PROMO2", "status": "delivered", "timestamp": "1793527260",
                "recipient_id": "972987654322", "biz_opaque_callback_data": "campaign=autumn;variant=B",
                "conversation": {"id": "7270432eae37498234f4444b35ffc5", "origin": {"type": "marketing"}},
                "pricing": {"billable": true, "pricing_model": "PMP", "category": "marketing"}}]
}$$);
-- The same delivered again (WhatsApp retries a callback it got no 2xx for):
-- duplicate, and no second history row.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "statuses": [{"id": "wamid.PROMO2", "status": "delivered", "timestamp": "1793527260",
                "recipient_id": "972987654322", "biz_opaque_callback_data": "campaign=autumn;variant=B",
                "conversation": {"id": "7270432eae37498234f4444b35ffc5", "origin": {"type": "marketing"}},
                "pricing": {"billable": true, "pricing_model": "PMP", "category": "marketing"}}]
}$$);
-- david-lev/pywa tests/data/updates/message_status.json "read" and "played"
-- (played: a voice message listened to, counted as read); "group": a read in
-- a group, with the participant's ids.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "statuses": [{"id": "wamid.PROMO3", "status": "read", "timestamp": "1793527320", "recipient_id": "972987654323",
                "conversation": {"id": "8170432eae37498234f4444b35ffc5", "origin": {"type": "service"}},
                "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"}},
               {"id": "wamid.PROMO4", "status": "played", "timestamp": "1793527380", "recipient_id": "972987654324"},
               {"id": "wamid.PROMO5", "status": "read", "timestamp": "1793527440",
                "recipient_id": "fowefinoewcnw", "recipient_type": "group",
                "recipient_participant_id": "972987654325", "recipient_participant_user_id": "US.123456"}]
}$$);
-- david-lev/pywa tests/data/updates/message_status.json "failed" and
-- netflie/whatsapp-cloud-api tests/Unit/WebHook/NotificationFactoryTest.php
-- (a status with errors): failed, with the provider's errors.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "statuses": [{"id": "wamid.PROMO6", "status": "failed", "timestamp": "1793527260", "recipient_id": "972987654326",
                "errors": [{"code": 130472, "title": "User's number is part of an experiment",
                            "message": "User's number is part of an experiment",
                            "error_data": {"details": "Failed to send message because this user's phone number is part of an experiment"},
                            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]}]
}$$);
-- A status dated before the send: pywa's "read" keeps its 2023 timestamp
-- (1689380458).  Read, at the send's time: no stage moves months back.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "statuses": [{"id": "wamid.PROMO7", "status": "read", "timestamp": "1689380458", "recipient_id": "972987654327",
                "conversation": {"id": "7270432eae37498234f4444b35ffc5", "origin": {"type": "service"}},
                "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"}}]
}$$);
SELECT blast, phone, status, sent, delivered, read, failed FROM wp_states() WHERE blast = 'promo';
SELECT r.error->0->>'code' AS error_code FROM revenue_engine.blast_recipients r WHERE r.provider_message_id = 'wamid.PROMO6';
-- Every status's provider data is in the history, the ones that changed
-- nothing (result duplicate) too; the retried delivered is there once.
SELECT h.message_id, h.old_status, h.new_status, h.result, h.occurred_at - '2026-11-01 10:00+00' AS at,
       h.metadata->'pricing'->>'category' AS pricing, h.metadata->'conversation'->>'id' AS conversation,
       h.metadata->>'biz_opaque_callback_data' AS tracker, h.metadata->>'timestamp' AS provider_timestamp
  FROM revenue_engine.status_history h
 WHERE h.tenant_id = 'wa_payloads' AND h.source = 'webhook' ORDER BY h.id;

-- ===========================================================================
-- Messages
-- ===========================================================================

-- david-lev/pywa tests/data/updates/message.json "reaction": a reaction names
-- the message it reacts to.  +972987654321's older message gets it; neither
-- of its recipients replied.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321"}],
  "messages": [{"from": "972987654321", "id": "wamid.IN-REACT-1", "timestamp": "1793527500", "type": "reaction",
                "reaction": {"message_id": "wamid.OLDER1", "emoji": "\ud83d\ude2e"}}]
}$$);
-- david-lev/pywa tests/data/updates/message.json "unreaction_empty" and
-- "unreaction_no_emoji", netflie/whatsapp-cloud-api
-- tests/Unit/WebHook/NotificationFactoryTest.php (a removed reaction): the
-- reaction is taken back, recorded as such, still no reply.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "messages": [{"from": "972987654321", "id": "wamid.IN-REACT-2", "timestamp": "1793527510", "type": "reaction",
                "reaction": {"message_id": "wamid.OLDER1", "emoji": ""}},
               {"from": "972987654322", "id": "wamid.IN-REACT-3", "timestamp": "1793527520", "type": "reaction",
                "reaction": {"message_id": "wamid.PROMO2"}},
               {"from": "972987654322", "id": "wamid.IN-REACT-4", "timestamp": "1793527530", "type": "reaction",
                "reaction": {"message_id": "wamid.SENT-BY-THE-APP", "emoji": "\ud83d\udc4d"}}]
}$$);
SELECT blast, phone, status, replied FROM wp_states() WHERE phone IN ('+972987654321', '+972987654322');
SELECT e.kind, e.item_id, e.message_id, b.tag AS blast, e.sender, e.detail,
       e.occurred_at - '2026-11-01 10:00+00' AS at
  FROM revenue_engine.channel_events e LEFT JOIN revenue_engine.blasts b ON b.tenant_id = e.tenant_id AND b.id = e.blast_id
 WHERE e.tenant_id = 'wa_payloads' ORDER BY e.id;

-- david-lev/pywa tests/data/updates/system.json "phone_number_change" and
-- netflie/whatsapp-cloud-api tests/Unit/WebHook/NotificationFactoryTest.php
-- (a system notification): the user changed number.  Not a reply: a
-- channel event, and an outbox event phone_number_changed for the app.
-- david-lev/pywa tests/data/updates/system.json "identity_change": recorded,
-- not a reply.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "contacts": [{"profile": {"name": "User A"}, "wa_id": "972987654323"}],
  "messages": [{"from": "972987654323", "id": "wamid.IN-SYS-1", "timestamp": "1793527600", "type": "system",
                "system": {"body": "User A changed from 972987654323 to 972912345678",
                           "wa_id": "972912345678", "type": "user_changed_number"}},
               {"from": "972987654324", "id": "wamid.IN-SYS-2", "timestamp": "1793527610", "type": "system",
                "identity": {"acknowledged": true, "created_timestamp": "1793527610", "hash": "xyzxyz"},
                "system": {"body": "User identity changed", "type": "customer_identity_changed"}}]
}$$);
SELECT blast, phone, status, replied FROM wp_states() WHERE phone IN ('+972987654323', '+972987654324');
SELECT e.kind, e.item_id, e.sender, e.detail FROM revenue_engine.channel_events e
 WHERE e.tenant_id = 'wa_payloads' AND e.kind IN ('number_changed', 'identity_changed') ORDER BY e.id;
SELECT e.event_type, e.user_id, e.event_data - 'occurred_at' AS event_data,
       (e.event_data->>'occurred_at')::timestamptz - '2026-11-01 10:00+00' AS at
  FROM revenue_engine.webhook_events e WHERE e.tenant_id = 'wa_payloads';
-- The same callback again: duplicates, and no second outbox event.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "messages": [{"from": "972987654323", "id": "wamid.IN-SYS-1", "timestamp": "1793527600", "type": "system",
                "system": {"body": "User A changed from 972987654323 to 972912345678",
                           "wa_id": "972912345678", "type": "user_changed_number"}}]
}$$);
SELECT count(*) AS number_change_events FROM revenue_engine.webhook_events e
 WHERE e.tenant_id = 'wa_payloads' AND e.event_type = 'phone_number_changed';

-- A user who opens the chat (WhatsApp's "request_welcome" message type, as the
-- Cloud API documents it): recorded, never a reply.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "contacts": [{"profile": {"name": "User B"}, "wa_id": "972987654324"}],
  "messages": [{"from": "972987654324", "id": "wamid.IN-WELCOME-1", "timestamp": "1793527620",
                "type": "request_welcome"}]
}$$);
SELECT blast, phone, status, replied FROM wp_states() WHERE phone = '+972987654324';
SELECT e.kind, e.item_id, e.sender FROM revenue_engine.channel_events e
 WHERE e.tenant_id = 'wa_payloads' AND e.kind = 'welcome_request';

-- david-lev/pywa tests/data/updates/message.json "reply": a text whose
-- context.id names the older blast's message.  That recipient replied, not
-- the phone's latest (the promo).
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321"}],
  "messages": [{"context": {"from": "972123456789", "id": "wamid.OLDER1"},
                "from": "972987654321", "id": "wamid.IN-REPLY-1", "timestamp": "1793527700",
                "text": {"body": "replied text"}, "type": "text"}]
}$$);
SELECT blast, phone, status, replied FROM wp_states() WHERE phone = '+972987654321';
-- david-lev/pywa tests/data/updates/message.json "text": no context, so the
-- phone's latest recipient (the promo) replied.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321",
                "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}],
  "messages": [{"from": "972987654321", "id": "wamid.IN-TEXT-1", "timestamp": "1793527710",
                "text": {"body": "Body Text"}, "type": "text"}]
}$$);
SELECT blast, phone, status, replied FROM wp_states() WHERE phone = '+972987654321';
-- A reply that quotes a message no blast sent (context.id of the app's own
-- message): not a reply to a blast, even from a phone that got one.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "messages": [{"context": {"from": "972123456789", "id": "wamid.SENT-BY-THE-APP"},
                "from": "972987654322", "id": "wamid.IN-REPLY-2", "timestamp": "1793527720",
                "text": {"body": "about my order"}, "type": "text"}]
}$$);
-- david-lev/pywa tests/data/updates/callback_button.json
-- "quick_reply_without_context" (from_user_id) and Secreto31126/whatsapp-api-js
-- src/index.ts (from_user_id, from_parent_user_id: newer payloads may name the
-- sender by a user id alone): a button reply without "from" whose context
-- names our message is that recipient's reply; one without either cannot be
-- matched.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "contacts": [{"profile": {"name": "Test Name"}, "user_id": "US.13491208655302741918"}],
  "messages": [{"context": {"from": "972123456789", "id": "wamid.PROMO4"},
                "from_user_id": "US.13491208655302741918", "id": "wamid.IN-BUTTON-1", "timestamp": "1793527730",
                "type": "button", "button": {"payload": "callback_data", "text": "title"}},
               {"from_user_id": "US.13491208655302741919", "id": "wamid.IN-BUTTON-2", "timestamp": "1793527731",
                "type": "button", "button": {"payload": "callback_data", "text": "title"}}]
}$$);
-- A "from" that is not a phone number, with a context naming our message:
-- the context is enough.
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "messages": [{"context": {"from": "972123456789", "id": "wamid.PROMO5"},
                "from": "US.13491208655302741920", "id": "wamid.IN-REPLY-3", "timestamp": "1793527740",
                "type": "interactive",
                "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}}]
}$$);
-- david-lev/pywa tests/data/updates/message.json "image", "static_sticker",
-- "current_location", "unsupported", "referral": every other type is a
-- person writing: a reply to the phone's latest message, if it is not failed
-- (the sticker's) and the phone got one (not the referral's: unmatched).
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "messages": [{"from": "972987654323", "id": "wamid.IN-IMAGE-1", "timestamp": "1793527800", "type": "image",
                "image": {"caption": "Caption", "mime_type": "image/jpeg", "sha256": "O5u5Z5J7pY=", "id": "1234567890"}},
               {"from": "972987654326", "id": "wamid.IN-STICKER-1", "timestamp": "1793527801", "type": "sticker",
                "sticker": {"mime_type": "image/webp", "sha256": "sdfsdfsdfs=", "id": "1234567891", "animated": false}},
               {"from": "972987654327", "id": "wamid.IN-LOCATION-1", "timestamp": "1793527802", "type": "location",
                "location": {"latitude": 37.4220, "longitude": -122.0841}},
               {"from": "972987654328", "id": "wamid.IN-UNSUPPORTED-1", "timestamp": "1793527803", "type": "unsupported",
                "errors": [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown",
                            "error_data": {"details": "Message type is currently not supported."}}]},
               {"from": "972987654399", "id": "wamid.IN-REFERRAL-1", "timestamp": "1793527804", "type": "text",
                "text": {"body": "BODY"},
                "referral": {"source_url": "AD_OR_POST_FB_URL", "source_id": "ADID", "source_type": "ad",
                             "headline": "AD_TITLE", "body": "AD_DESCRIPTION", "media_type": "image",
                             "image_url": "RAW_IMAGE_URL", "ctwa_clid": "CTWA_CLID"}}]
}$$);
SELECT blast, phone, status, delivered, read, replied, failed FROM wp_states();
-- Replies in the history, with the message that made them.
SELECT h.message_id, h.old_status, h.new_status, h.result, h.metadata->>'id' AS inbound,
       h.metadata->>'type' AS type
  FROM revenue_engine.status_history h
 WHERE h.tenant_id = 'wa_payloads' AND h.source = 'webhook' AND h.new_status = 'replied' ORDER BY h.id;

-- ===========================================================================
-- Errors of the channel itself
-- ===========================================================================

-- david-lev/pywa tests/data/updates/message.json "interactive_message_with_err"
-- (value.errors beside a message) and pywa/errors.py (130429, the rate limit):
-- errors at the value level are recorded per channel, and the message beside
-- them is applied (a duplicate: that recipient replied already).
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654324"}],
  "messages": [{"context": {"from": "972123456789", "id": "wamid.PROMO4"},
                "from": "972987654324", "id": "wamid.IN-INTERACTIVE-1", "timestamp": "1793527900",
                "type": "interactive"}],
  "errors": [{"code": 131000, "title": "Something went wrong", "message": "Something went wrong",
              "error_data": {"details": "Unsupported webhook payload"}}]
}$$);
SELECT * FROM wp_post($${
  "messaging_product": "whatsapp",
  "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
  "errors": [{"code": 130429, "title": "Rate limit hit", "message": "(#130429) Rate limit hit",
              "error_data": {"details": "Cloud API message throughput has been reached."}}, "not an object"]
}$$);
SELECT c.name AS channel, e.kind, e.detail, e.data->'error_data'->>'details' AS details
  FROM revenue_engine.channel_events e JOIN revenue_engine.channels c ON c.tenant_id = e.tenant_id AND c.id = e.channel_id
 WHERE e.tenant_id = 'wa_payloads' AND e.kind = 'error' ORDER BY e.id;

-- ===========================================================================
-- Timestamps: Unix seconds or RFC 3339 with an offset, whatever the session
-- ===========================================================================
SET DateStyle = 'SQL, DMY';
SET TimeZone = 'America/St_Johns';
SELECT blast_id AS times FROM revenue_engine.create_blast('wa', 'times',
         recipients => '["+447700900001", "+447700900002", "+447700900003", "+447700900004", "+447700900005"]',
         message => 'Hello', scheduled_for => '2030-01-01 09:00+00') \gset
SELECT wp_land(:times, '+44770090000' || n, 'wamid.TIME' || n) FROM generate_series(1, 5) n;
-- Good: an offset, Z in lower case, Unix seconds with a fraction as a string
-- and as a number.  Bad, each rejected on its row while the rest apply: no
-- offset, day first, 30 February, hour 24, an offset of 25 hours, exponent,
-- hexadecimal, a sign, a space, a word, an empty string, a boolean.
SELECT * FROM wp_post($${
  "statuses": [
    {"id": "wamid.TIME1", "status": "delivered", "timestamp": "2026-11-01T18:01:00+08:00"},
    {"id": "wamid.TIME2", "status": "delivered", "timestamp": "2026-11-01t10:02:00.5z"},
    {"id": "wamid.TIME3", "status": "delivered", "timestamp": "1793527380.25"},
    {"id": "wamid.TIME4", "status": "delivered", "timestamp": 1793527440},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "2026-11-01 10:05:00"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "01/11/2026 10:05:00Z"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "2026-02-30T10:05:00Z"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "2026-11-01T24:00:00Z"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "2026-11-01T10:05:00+25:00"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "1.7935275e9"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "0x6AE6A4B0"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "+1793527500"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": " 1793527500"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "tomorrow"},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": ""},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": true},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": -1793527500},
    {"id": "wamid.TIME5", "status": "delivered", "timestamp": "2999-01-01T00:00:00Z"}]
}$$);
SELECT r.provider_message_id, r.status,
       to_char(r.delivered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS delivered_utc
  FROM revenue_engine.blast_recipients r WHERE r.blast_id = :times ORDER BY r.id;
RESET DateStyle;
SET DateStyle = 'ISO, YMD';
SET TimeZone = 'UTC';

-- ===========================================================================
-- Parked statuses: capped, expiring
-- ===========================================================================
SHOW revenue_engine.parked_retention;
SHOW revenue_engine.parked_max_per_tenant;
SHOW revenue_engine.parked_max_per_callback;
-- At most 2 parked by one callback: the third and fourth unknown ids are
-- rejected on their rows, the known id beside them applies.
SET revenue_engine.parked_max_per_callback = 2;
SELECT * FROM wp_post($${
  "statuses": [
    {"id": "wamid.UNKNOWN1", "status": "delivered", "timestamp": "1793527500"},
    {"id": "wamid.UNKNOWN2", "status": "delivered", "timestamp": "1793527500"},
    {"id": "wamid.UNKNOWN3", "status": "delivered", "timestamp": "1793527500"},
    {"id": "wamid.UNKNOWN4", "status": "read", "timestamp": "1793527500"},
    {"id": "wamid.TIME5", "status": "read", "timestamp": "1793527500"}]
}$$);
RESET revenue_engine.parked_max_per_callback;
-- At most 3 parked for the tenant: one more fits.
SET revenue_engine.parked_max_per_tenant = 3;
SELECT * FROM wp_post($${
  "statuses": [
    {"id": "wamid.UNKNOWN5", "status": "delivered", "timestamp": "1793527500"},
    {"id": "wamid.UNKNOWN6", "status": "delivered", "timestamp": "1793527500"}]
}$$);
SELECT revenue_engine.record_message_status('wamid.UNKNOWN7', 'read', '2026-11-01 10:05+00', 'webhook');
\echo :LAST_ERROR_SQLSTATE
RESET revenue_engine.parked_max_per_tenant;
SELECT message_id, status FROM revenue_engine.status_parked WHERE tenant_id = 'wa_payloads' ORDER BY id;
-- Two of them have waited for 25 hours: the sweep (what the worker runs)
-- deletes them after revenue_engine.parked_retention (1 day), keeps the rest.
UPDATE revenue_engine.status_parked SET received_at = now() - interval '25 hours'
 WHERE tenant_id = 'wa_payloads' AND message_id IN ('wamid.UNKNOWN1', 'wamid.UNKNOWN2');
SELECT revenue_engine.apply_parked_statuses() AS applied;
SELECT message_id, status FROM revenue_engine.status_parked WHERE tenant_id = 'wa_payloads' ORDER BY id;
-- With a retention of 30 minutes (GUC units), the one parked an hour ago
-- goes, a fresh one stays.
SELECT revenue_engine.record_message_status('wamid.UNKNOWN8', 'read', '2026-11-01 10:05+00', 'webhook');
SET revenue_engine.parked_retention = '30min';
SHOW revenue_engine.parked_retention;
UPDATE revenue_engine.status_parked SET received_at = now() - interval '1 hour'
 WHERE tenant_id = 'wa_payloads' AND message_id = 'wamid.UNKNOWN5';
SELECT revenue_engine.apply_parked_statuses() AS applied;
SELECT message_id, status FROM revenue_engine.status_parked WHERE tenant_id = 'wa_payloads' ORDER BY id;
RESET revenue_engine.parked_retention;
SET revenue_engine.parked_retention = '1 week';
\echo :LAST_ERROR_SQLSTATE
-- The application role cannot raise the caps.
SET ROLE revenue_engine_user;
SET revenue_engine.parked_max_per_tenant = 1000000000;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- ===========================================================================
-- UTF-8 message ids, kept byte for byte
-- ===========================================================================
SELECT blast_id AS utf8 FROM revenue_engine.create_blast('wa', 'utf8',
         recipients => '["+819012345678"]', message => 'こんにちは', scheduled_for => '2030-01-01 09:00+00') \gset
-- The status comes first (parked under its UTF-8 id, written as JSON escapes
-- and as UTF-8), then the send lands the id: applied.
SELECT * FROM wp_post($${
  "statuses": [{"id": "wamid.\u00c4\u00d6-\u65e5\u672c-\ud83d\ude00", "status": "delivered", "timestamp": "1793527500"},
               {"id": "wamid.ÄÖ-日本-😀", "status": "read", "timestamp": "1793527560"}]
}$$);
SELECT message_id, encode(convert_to(message_id, 'UTF8'), 'hex') AS bytes, status
  FROM revenue_engine.status_parked WHERE tenant_id = 'wa_payloads' AND message_id LIKE 'wamid.Ä%' ORDER BY id;
SELECT wp_land(:utf8, '+819012345678', 'wamid.ÄÖ-日本-😀');
SELECT r.provider_message_id, r.status, r.send_response->'messages'->0->>'id' = r.provider_message_id AS response_kept
  FROM revenue_engine.blast_recipients r WHERE r.blast_id = :utf8;
-- A message id longer than 200 bytes is rejected (quoted whole characters
-- in the reason), not cut into invalid UTF-8.
SELECT revenue_engine.record_message_status(repeat('日', 70), 'read', '2026-11-01 10:05+00');
\echo :LAST_ERROR_SQLSTATE

-- The application role reads the channel's events.
SET ROLE revenue_engine_user;
SELECT kind, count(*) FROM revenue_engine.channel_events WHERE tenant_id = 'wa_payloads' GROUP BY kind ORDER BY kind;
RESET ROLE;
RESET revenue_engine.tenant;
