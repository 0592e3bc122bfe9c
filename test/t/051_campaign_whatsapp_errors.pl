# WhatsApp errors of campaign sends through the worker (issue 12, point 8):
# the provider accepts a text message, then reports it failed in a signed
# status callback with error 131047 (24-hour window closed): the step's
# template is queued in its WhatsApp template form, and the worker sends it
# (a Cloud API template message carrying its campaign key back); 131049
# (per-user marketing limit) queues the same send again 24 hours later;
# 131050 records a marketing opt-out, which stops the contact's enrollment.
# And a campaign message of a channel with a status URL is polled.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $SECRET = 'meta-app-secret-0123456789abcdef';
my $root   = $ENV{TESTDIR} // '.';
require "$root/test/lib/Receiver.pm";
my $tmp  = PostgreSQL::Test::Utils::tempdir;
my $rx   = Receiver::start($root, $tmp, 'whsec_' . 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==');
my $http = Receiver::http();
my $res  = $http->post("$rx->{base}/_control/mode",
	{ content => encode_json({ mode => 'provider', shape => 'whatsapp', id_prefix => 'wamid.T' }),
	  headers => { 'content-type' => 'application/json' } });
die "receiver mode: $res->{status}" unless $res->{success};

my $node = PostgreSQL::Test::Cluster->new('campaign_whatsapp_errors');
$node->init;
$node->append_conf('postgresql.conf', <<'EOC');
shared_preload_libraries = 'revenue_engine'
timezone = 'UTC'
revenue_engine.http_allow_private = on
EOC
$node->start;
sub q1 { return $node->safe_psql('postgres', $_[0]); }
q1('CREATE EXTENSION revenue_engine');

q1(qq{
	SELECT revenue_engine.create_channel('wa', '$rx->{base}/v19.0/1/messages',
	         body_template => '{"messaging_product": "whatsapp"}', message_id_path => '{messages,0,id}');
	SELECT revenue_engine.set_channel_kind('wa', 'whatsapp');
	SELECT revenue_engine.set_channel_status_source('wa', webhook_kind => 'whatsapp', webhook_secret => '$SECRET');
	SELECT revenue_engine.create_template('welcome', 'Hi {{first_name|there}}!',
	         whatsapp => '{"name": "welcome_v1", "language": "en_US", "params": ["{{first_name|there}}"]}');
	INSERT INTO revenue_engine.contacts (external_ref, phone, name)
	SELECT 'c' || n, '+1555000' || lpad(n::text, 4, '0'), 'Person ' || n FROM generate_series(1, 3) n;
	INSERT INTO revenue_engine.campaigns (name, channel_id, status)
	SELECT 'drip', id, 'active' FROM revenue_engine.channels WHERE name = 'wa';
	INSERT INTO revenue_engine.campaign_versions (campaign_id, version) SELECT id, 1 FROM revenue_engine.campaigns;
	INSERT INTO revenue_engine.campaign_steps (campaign_id, version, position, kind, template)
	SELECT id, 1, 1, 'send', 'welcome' FROM revenue_engine.campaigns;
	INSERT INTO revenue_engine.enrollments (campaign_id, contact_id, version, step, next_run_at)
	SELECT g.id, k.id, 1, 2, now() + interval '1 day' FROM revenue_engine.campaigns g, revenue_engine.contacts k;
	WITH s AS (
	    INSERT INTO revenue_engine.sends (channel_id, idempotency_key, payload)
	    SELECT g.channel_id, format('campaign:%s:1', e.id),
	           jsonb_build_object('to', k.phone, 'type', 'text', 'text', jsonb_build_object('body', 'Hi!'))
	      FROM revenue_engine.enrollments e
	      JOIN revenue_engine.campaigns g ON g.tenant_id = e.tenant_id AND g.id = e.campaign_id
	      JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
	    RETURNING id, channel_id, idempotency_key)
	INSERT INTO revenue_engine.campaign_messages
	       (send_id, enrollment_id, campaign_id, version, step, contact_id, channel_id)
	SELECT s.id, e.id, e.campaign_id, 1, 1, e.contact_id, s.channel_id
	  FROM s JOIN revenue_engine.enrollments e ON format('campaign:%s:1', e.id) = s.idempotency_key;
	SELECT revenue_engine.wake_worker();});

ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 3 AND bool_and(status = 'sent' AND message_id IS NOT NULL)
		    FROM revenue_engine.campaign_messages}),
	'the worker sent the three text messages; their ids landed');

# message id of a contact's text message
sub mid
{
	return q1(qq{SELECT m.message_id FROM revenue_engine.campaign_messages m
	              JOIN revenue_engine.contacts k ON k.tenant_id = m.tenant_id AND k.id = m.contact_id
	             WHERE k.external_ref = '$_[0]' AND m.form = 'text'});
}

# The provider's failed statuses, one per contact, in one signed callback
my @codes = ([ 'c1', 131047 ], [ 'c2', 131049 ], [ 'c3', 131050 ]);
my $body = encode_json({ object => 'whatsapp_business_account', entry => [ { id => '1', changes => [ {
	field => 'messages', value => { messaging_product => 'whatsapp', statuses => [ map {
		{ id => mid($_->[0]), status => 'failed', timestamp => '' . (time() - 30),
		  recipient_id => '1555000000' . substr($_->[0], 1),
		  errors => [ { code => $_->[1], title => "error $_->[1]" } ] } } @codes ] } } ] } ] });
(my $qbody = $body) =~ s/'/''/g;
my $sig = 'sha256=' . hmac_sha256_hex($body, $SECRET);
is(q1(qq{SELECT string_agg(result, ',' ORDER BY item) FROM revenue_engine.ingest_status_webhook('wa',
           jsonb_build_object('X-Hub-Signature-256', '$sig'), '$qbody')}),
	'applied,applied,applied', 'the callback\'s three failed statuses are applied');

# 131047: the template form is queued, and the worker sends it
ok($node->poll_query_until('postgres',
		q{SELECT m.status FROM revenue_engine.campaign_messages m
		    JOIN revenue_engine.contacts k ON k.tenant_id = m.tenant_id AND k.id = m.contact_id
		   WHERE k.external_ref = 'c1' AND m.form = 'whatsapp_template'}, 'sent'),
	'131047: the WhatsApp template form was queued and sent');
my ($tpl) = grep {
	my $b = eval { decode_json($_->{body}) } // {};
	($b->{type} // '') eq 'template'
} @{ Receiver::requests($rx) };
ok($tpl, 'the provider got a template message');
my $tb = $tpl ? decode_json($tpl->{body}) : {};
is($tb->{template}{name} . '|' . $tb->{template}{language}{code} . '|'
	  . $tb->{template}{components}[0]{parameters}[0]{text} . '|' . $tb->{to},
	'welcome_v1|en_US|Person|+15550000001', 'in the Cloud API shape, its parameter rendered for the contact');
like($tb->{biz_opaque_callback_data} // '', qr/^campaign:\d+:1:whatsapp_template$/,
	'carrying its own campaign key back');
is(q1(q{SELECT string_agg(h.event, ',' ORDER BY h.id) FROM revenue_engine.enrollment_history h
          JOIN revenue_engine.enrollments e ON e.tenant_id = h.tenant_id AND e.id = h.enrollment_id
          JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
         WHERE k.external_ref = 'c1'}),
	'failed,sent', 'history: the text failed, the template form sent');

# 131049: the same send, 24 hours later
is(q1(q{SELECT s.status || ':' || (s.next_attempt_at - now() > interval '23 hours') || ':' || m.status
          FROM revenue_engine.sends s
          JOIN revenue_engine.campaign_messages m ON m.tenant_id = s.tenant_id AND m.send_id = s.id
          JOIN revenue_engine.contacts k ON k.tenant_id = m.tenant_id AND k.id = m.contact_id
         WHERE k.external_ref = 'c2'}),
	'queued:true:queued', '131049: the send is queued again a day later');

# 131050: opt-out recorded, the enrollment stopped
is(q1(q{SELECT c.granted || ':' || c.source || ':' || e.status || ':' || e.end_reason
          FROM revenue_engine.contacts k
          JOIN revenue_engine.contact_consents c ON c.tenant_id = k.tenant_id AND c.contact_id = k.id
          JOIN revenue_engine.enrollments e ON e.tenant_id = k.tenant_id AND e.contact_id = k.id
         WHERE k.external_ref = 'c3' AND c.channel_kind = 'whatsapp' AND c.purpose = 'marketing'}),
	'false:whatsapp 131050:exited:opt-out', '131050: marketing opt-out recorded, enrollment stopped');

# ===========================================================================
# Polling: a campaign message of a channel with a status URL is polled like a
# blast recipient.  The receiver answers a GET with {"ok": true, ...}: the
# status path {ok} maps to delivered.
q1(qq{
	SELECT revenue_engine.create_channel('wa_poll', '$rx->{base}/v19.0/2/messages',
	         body_template => '{"messaging_product": "whatsapp"}', message_id_path => '{messages,0,id}');
	SELECT revenue_engine.set_channel_status_source('wa_poll', status_url => '$rx->{base}/status/{message_id}',
	         status_path => '{ok}', status_map => '{"true": "delivered"}', poll_interval => '1 second');
	INSERT INTO revenue_engine.contacts (external_ref, phone) VALUES ('c4', '+15550000004');
	INSERT INTO revenue_engine.campaigns (name, channel_id, status)
	SELECT 'drip_poll', id, 'active' FROM revenue_engine.channels WHERE name = 'wa_poll';
	INSERT INTO revenue_engine.campaign_versions (campaign_id, version)
	SELECT id, 1 FROM revenue_engine.campaigns WHERE name = 'drip_poll';
	INSERT INTO revenue_engine.enrollments (campaign_id, contact_id, version, step, next_run_at)
	SELECT g.id, k.id, 1, 2, now() + interval '1 day' FROM revenue_engine.campaigns g, revenue_engine.contacts k
	 WHERE g.name = 'drip_poll' AND k.external_ref = 'c4';
	WITH s AS (
	    INSERT INTO revenue_engine.sends (channel_id, idempotency_key, payload)
	    SELECT g.channel_id, format('campaign:%s:1', e.id), jsonb_build_object('to', '+15550000004', 'type', 'text')
	      FROM revenue_engine.enrollments e
	      JOIN revenue_engine.campaigns g ON g.tenant_id = e.tenant_id AND g.id = e.campaign_id
	     WHERE g.name = 'drip_poll'
	    RETURNING id, channel_id, idempotency_key)
	INSERT INTO revenue_engine.campaign_messages
	       (send_id, enrollment_id, campaign_id, version, step, contact_id, channel_id)
	SELECT s.id, e.id, e.campaign_id, 1, 1, e.contact_id, s.channel_id
	  FROM s JOIN revenue_engine.enrollments e ON format('campaign:%s:1', e.id) = s.idempotency_key;
	SELECT revenue_engine.wake_worker();});
ok($node->poll_query_until('postgres',
		q{SELECT m.status FROM revenue_engine.campaign_messages m
		    JOIN revenue_engine.campaigns g ON g.tenant_id = m.tenant_id AND g.id = m.campaign_id
		   WHERE g.name = 'drip_poll'}, 'delivered'),
	'polling: the campaign message is delivered (no callback named it)');
my $pmid = q1(q{SELECT m.message_id FROM revenue_engine.campaign_messages m
                 JOIN revenue_engine.campaigns g ON g.tenant_id = m.tenant_id AND g.id = m.campaign_id
                WHERE g.name = 'drip_poll'});
is(q1(q{SELECT count(*) FROM revenue_engine.poll_queue WHERE recipient_id < 0}), 1,
	'delivered is not final: it is polled still');
is(q1(qq{SELECT revenue_engine.record_message_status('$pmid', 'read')}), 'applied', 'a callback: read');
ok($node->poll_query_until('postgres', q{SELECT count(*) FROM revenue_engine.poll_queue}, '0'),
	'read is final: the next poll ends its polling');

done_testing();
