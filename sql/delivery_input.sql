-- Endpoints, channels and sends: settings, secrets hidden, and bad input refused at create time.
\c
\set SHOW_CONTEXT never
SELECT revenue_engine.create_endpoint('crm', 'https://hooks.example.com/revenue',
         event_types => '{milestone_reached,daily_goal_achieved}',
         signing_secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
         headers => '{"Authorization": "Bearer s3cret"}',
         enabled => false) > 0 AS created;   -- disabled: nothing leaves this test
SELECT name, url, event_types, header_names, signing_secrets, timeout_ms, max_in_flight,
       retry_schedule, enabled
  FROM revenue_engine.endpoints_public;

-- Every event goes to every subscribed endpoint, in the enqueuing transaction.
SELECT revenue_engine.track_daily_usage(u(70), 'reply', 1, '2026-11-01')->'milestones';
SELECT e.event_type, d.status, d.attempts, ep.name
  FROM revenue_engine.deliveries d
  JOIN revenue_engine.webhook_events e ON e.id = d.event_id
  JOIN revenue_engine.endpoints ep ON ep.id = d.endpoint_id
 WHERE e.user_id = u(70);
SELECT revenue_engine.register_event_type('trial_ending');
SELECT revenue_engine.enqueue_event(u(70), 'trial_ending', '{"days": 3}') IS NOT NULL;
SELECT count(*) AS not_subscribed FROM revenue_engine.deliveries d
  JOIN revenue_engine.webhook_events e ON e.id = d.event_id WHERE e.event_type = 'trial_ending';

-- Bad endpoints
SELECT revenue_engine.create_endpoint('x', 'ftp://example.com/');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_endpoint('x', 'not a url');
SELECT revenue_engine.create_endpoint('x', 'http://');
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', event_types => '{no_such_event}');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', event_types => '{}');
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', signing_secret => 'secret');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', signing_secret => 'whsec_!!!!');
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', timeout_ms => -5);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', max_in_flight => 0);
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', rate_limit => 0);
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', rate_period => 'hour');
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', retry_schedule => '{5 seconds,-1 second}');
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', headers => '{"X-Evil": "a\r\nHost: other"}');
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', headers => '{"webhook-id": "mine"}');
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', headers => '{"Bad Name": "v"}');
SELECT revenue_engine.create_endpoint('x', 'https://example.com/', headers => '["not an object"]');
SELECT revenue_engine.create_endpoint(NULL, 'https://example.com/');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.create_endpoint('crm', 'https://example.com/');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS endpoints FROM revenue_engine.endpoints;

-- Changing and disabling endpoints; redrive of an unknown one.
SELECT name, url, signing_secrets FROM revenue_engine.alter_endpoint('crm', url => 'https://hooks.example.com/v2',
         add_signing_secret => 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD');
SELECT name, signing_secrets FROM revenue_engine.alter_endpoint('crm', drop_signing_secrets_except_newest => true);
SELECT revenue_engine.set_endpoint_enabled('crm', false, 'maintenance window');
SELECT enabled, disabled_reason FROM revenue_engine.endpoints_public WHERE name = 'crm';
SELECT revenue_engine.set_endpoint_enabled('nope', true);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.redrive('nope');
SELECT revenue_engine.redrive('crm');

-- Channels and sends
SELECT revenue_engine.create_channel('whatsapp', 'https://graph.example.com/v19.0/123/messages',
         headers => '{"Authorization": "Bearer EAAG"}',
         body_template => '{"messaging_product": "whatsapp"}',
         message_id_path => '{messages,0,id}', enabled => false) > 0 AS created;
SELECT name, method, header_names, body_template, message_id_path FROM revenue_engine.channels_public;
SELECT revenue_engine.enqueue_send('whatsapp', '{"to": "+60123456789", "type": "text"}', 'blast-1:+60123456789') AS first \gset
SELECT revenue_engine.enqueue_send('whatsapp', '{"to": "+60123456789", "type": "text"}', 'blast-1:+60123456789') = :first AS same_send;
SELECT count(*) AS sends, min(status) AS status FROM revenue_engine.sends;
SELECT revenue_engine.enqueue_send('nope', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.enqueue_send('whatsapp', '"text"');
SELECT revenue_engine.enqueue_send('whatsapp', NULL);
SELECT revenue_engine.enqueue_send('whatsapp', '{}', '');
SELECT revenue_engine.create_channel('sms', 'https://sms.example.com/', method => 'GET');
SELECT revenue_engine.create_channel('sms', 'https://sms.example.com/', message_id_path => '{}');

-- The application role sees no secret.
CREATE ROLE re_reader;
GRANT revenue_engine_user TO re_reader;
SET ROLE re_reader;
SELECT count(*) FROM revenue_engine.endpoints;
SELECT count(*) FROM revenue_engine.channels;
SELECT name, header_names FROM revenue_engine.endpoints_public;
SELECT revenue_engine.create_endpoint('mine', 'https://example.com/');
RESET ROLE;
DROP OWNED BY re_reader;
DROP ROLE re_reader;

-- Settings
SET revenue_engine.http_allow_private = on;
RESET revenue_engine.http_allow_private;
-- attempt_retention is a GUC with a unit (minutes): '30d', '720h', '43200min';
-- current_setting() gives it back with a unit that the interval cast reads.
SET revenue_engine.attempt_retention = 'forever';
SET revenue_engine.attempt_retention = '30 days';
-- (the wording of the valid range differs between PostgreSQL versions: cut)
DO $$ BEGIN SET revenue_engine.attempt_retention = 0;
EXCEPTION WHEN invalid_parameter_value THEN RAISE NOTICE '%', regexp_replace(SQLERRM, ' \(.*\)$', '');
END $$;
SET revenue_engine.attempt_retention = '720h';
SHOW revenue_engine.attempt_retention;
SELECT current_setting('revenue_engine.attempt_retention')::interval;
SET revenue_engine.attempt_retention = '90min';
SELECT current_setting('revenue_engine.attempt_retention')::interval;
SET revenue_engine.attempt_retention = 20;
SELECT current_setting('revenue_engine.attempt_retention')::interval;
SET revenue_engine.attempt_retention = '30d';
SELECT revenue_engine.schedule_maintenance();

-- The addresses the worker refuses to connect to (NULL: it connects), and the
-- IPv6 forms that reach an IPv4 address: each judged by the IPv4 address it
-- reaches, the tunnels and local-use NAT64 refused whole.
SELECT a, revenue_engine.http_address_class(a) AS refused
  FROM unnest(ARRAY[
       '93.184.215.14', '127.0.0.1', '10.1.2.3', '169.254.169.254', '100.64.0.1',
       '2606:2800:21f:cb07:6820:80da:af6b:8b2c', '::', '::1', 'fe80::1', 'fc00::1',
       'fd00:ec2::254', 'ff02::1', '2001:db8::1',
       '::ffff:93.184.215.14', '::ffff:127.0.0.1', '::ffff:10.0.0.1',
       '::ffff:0:93.184.215.14', '::ffff:0:127.0.0.1', '::ffff:0:169.254.169.254',
       '::93.184.215.14', '::10.0.0.1', '::0.0.0.2',
       '64:ff9b::93.184.215.14', '64:ff9b::127.0.0.1', '64:ff9b::192.168.1.1',
       '64:ff9b:1::93.184.215.14', '64:ff9b:1:ffff::a00:1',
       '2002:5db8:d70e::1', '2002:7f00:1::1', '2002:a00:1::1',
       '2001:0:5db8:d70e::1', '2001:0:4136:e378:8000:63bf:3fff:fdd2',
       'fec0::1', 'feff::1', '100::1', '100::ffff:1', '100:0:0:1::1']) AS a;
SELECT revenue_engine.http_address_class('example.com');
SELECT revenue_engine.http_address_class(NULL);
