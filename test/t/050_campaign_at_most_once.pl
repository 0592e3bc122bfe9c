# Crash semantics of campaign sends per channel (issue 12, point 9): the
# worker is killed (kill -9) while its requests stall at the provider.
#  - at-least-once channel (default): every send is sent again after the
#    restart, with the same Idempotency-Key header as the first attempt;
#  - at-most-once channel: no send is requested a second time; each becomes
#    'unknown', its campaign message 'unknown' with a history row; a status
#    callback naming the send's key (WhatsApp's biz_opaque_callback_data,
#    which the worker adds on whatsapp channels) settles it.
use strict;
use warnings;

use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $N = 6;    # sends per channel

my $root = $ENV{TESTDIR} // '.';
require "$root/test/lib/Receiver.pm";
my $tmp  = PostgreSQL::Test::Utils::tempdir;
my $rx   = Receiver::start($root, $tmp, 'whsec_' . 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==');
my $http = Receiver::http();

sub rx_mode
{
	my $res = $http->post("$rx->{base}/_control/mode",
		{ content => encode_json({@_}), headers => { 'content-type' => 'application/json' } });
	die "receiver mode: $res->{status} $res->{content}" unless $res->{success};
}

my $node = PostgreSQL::Test::Cluster->new('campaign_at_most_once');
$node->init;
$node->append_conf('postgresql.conf', <<'EOC');
shared_preload_libraries = 'revenue_engine'
timezone = 'UTC'
revenue_engine.http_allow_private = on
restart_after_crash = on
EOC
$node->start;
sub q1 { return $node->safe_psql('postgres', $_[0]); }
q1('CREATE EXTENSION revenue_engine');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM revenue_engine.workers WHERE database_name = current_database()}),
	'the delivery worker runs');

# Two WhatsApp channels to the stalling provider, one of each guarantee; a
# request waits up to 60 s, far longer than the test needs to kill the worker.
rx_mode(mode => 'stall', seconds => 120);
for my $ch ([ 'alo', 'at_least_once' ], [ 'amo', 'at_most_once' ])
{
	q1(qq{SELECT revenue_engine.create_channel('$ch->[0]', '$rx->{base}/$ch->[0]',
	          body_template => '{"messaging_product": "whatsapp"}', message_id_path => '{messages,0,id}',
	          timeout_ms => 60000, retry_schedule => '{1 second,1 second}', enabled => false);
	      SELECT revenue_engine.set_channel_kind('$ch->[0]', 'whatsapp', '$ch->[1]');
	      SELECT revenue_engine.set_channel_status_source('$ch->[0]', webhook_kind => 'whatsapp',
	          webhook_secret => 'meta-app-secret-$ch->[0]-0123456789')});
}

# Contacts, a campaign per channel, an enrollment per contact and campaign,
# and step 1's send and campaign message, as the runner queues them.
q1(qq{
	INSERT INTO revenue_engine.contacts (external_ref, phone)
	SELECT 'c' || n, '+1555000' || lpad(n::text, 4, '0') FROM generate_series(1, $N) n;
	INSERT INTO revenue_engine.campaigns (name, channel_id, status)
	SELECT 'drip_' || c.name, c.id, 'active' FROM revenue_engine.channels c;
	INSERT INTO revenue_engine.campaign_versions (campaign_id, version) SELECT id, 1 FROM revenue_engine.campaigns;
	INSERT INTO revenue_engine.campaign_steps (campaign_id, version, position, kind, template)
	SELECT id, 1, 1, 'send', 'welcome' FROM revenue_engine.campaigns;
	INSERT INTO revenue_engine.enrollments (campaign_id, contact_id, version, step)
	SELECT g.id, k.id, 1, 2 FROM revenue_engine.campaigns g, revenue_engine.contacts k;
	WITH s AS (
	    INSERT INTO revenue_engine.sends (channel_id, idempotency_key, payload)
	    SELECT g.channel_id, format('campaign:%s:1', e.id),
	           jsonb_build_object('to', k.phone, 'type', 'text', 'text', jsonb_build_object('body', 'Welcome'))
	      FROM revenue_engine.enrollments e
	      JOIN revenue_engine.campaigns g ON g.tenant_id = e.tenant_id AND g.id = e.campaign_id
	      JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
	    RETURNING id, channel_id, idempotency_key)
	INSERT INTO revenue_engine.campaign_messages
	       (send_id, enrollment_id, campaign_id, version, step, contact_id, channel_id)
	SELECT s.id, e.id, e.campaign_id, 1, 1, e.contact_id, s.channel_id
	  FROM s JOIN revenue_engine.enrollments e ON format('campaign:%s:1', e.id) = s.idempotency_key;
	SELECT revenue_engine.set_channel_enabled('alo', true);
	SELECT revenue_engine.set_channel_enabled('amo', true);});

# every request reached the provider, which holds it: all sends are 'sending'
ok($node->poll_query_until('postgres',
		q{SELECT count(*) FROM revenue_engine.sends WHERE status = 'sending'}, 2 * $N),
	"all " . 2 * $N . " sends are on the network");
ok(poll_requests(2 * $N, 30), 'the provider holds every request');

# kill -9 of the worker mid-request; the postmaster restarts everything, and
# the new worker reclaims the leases of the one that died
my $pid = q1(q{SELECT pid FROM revenue_engine.workers WHERE database_name = current_database()});
ok($pid =~ /^\d+$/, "worker pid $pid");
rx_mode(mode => 'provider', shape => 'whatsapp', id_prefix => 'wamid.');
kill 'KILL', $pid;
ok($node->poll_query_until('postgres',
		q{SELECT count(*) FILTER (WHERE status IN ('queued', 'sending')) = 0 AND count(*) > 0
		    FROM revenue_engine.sends}),
	'after the restart, no send is queued or in flight');

is(q1(q{SELECT c.name || ':' || s.status || ':' || count(*) FROM revenue_engine.sends s
          JOIN revenue_engine.channels c ON c.tenant_id = s.tenant_id AND c.id = s.channel_id
         GROUP BY c.name, s.status ORDER BY c.name}),
	"alo:sent:$N\namo:unknown:$N", 'at-least-once sends were sent again; at-most-once ones are unknown');
is(q1(q{SELECT c.name || ':' || m.status || ':' || count(*) FROM revenue_engine.campaign_messages m
          JOIN revenue_engine.channels c ON c.tenant_id = m.tenant_id AND c.id = m.channel_id
         GROUP BY c.name, m.status ORDER BY c.name}),
	"alo:sent:$N\namo:unknown:$N", 'their campaign messages');
is(q1(q{SELECT count(*) FROM revenue_engine.enrollment_history WHERE event = 'unknown'}),
	$N, 'one history row per unknown message');

# What the provider saw: at-most-once sends once each; at-least-once twice,
# with the same Idempotency-Key both times, carrying the campaign key back
my (%by_path_key, %bodies);
for my $r (@{ Receiver::requests($rx) })
{
	my %h = map { lc($_) => $r->{headers}{$_} } keys %{ $r->{headers} };
	my $key = $h{'idempotency-key'} // '(none)';
	$by_path_key{ $r->{path} }{$key}++;
	my $b = eval { decode_json($r->{body}) } // {};
	$bodies{ $b->{biz_opaque_callback_data} // '(none)' }++;
}
is(scalar(keys %{ $by_path_key{'/amo'} // {} }), $N, "at-most-once: $N distinct sends requested");
is((grep { $_ != 1 } values %{ $by_path_key{'/amo'} // {} }), 0, 'at-most-once: none requested twice');
is(scalar(keys %{ $by_path_key{'/alo'} // {} }), $N, "at-least-once: $N distinct idempotency keys");
is((grep { $_ != 2 } values %{ $by_path_key{'/alo'} // {} }), 0,
	'at-least-once: each key requested twice (before and after the crash), the same key');
is((grep { !/^campaign:\d+:1$/ } keys %bodies), 0, 'every request carries its campaign key back');

# A status naming an unknown send's key settles its message; later ones find it by id
my ($ref) = q1(q{SELECT s.idempotency_key FROM revenue_engine.sends s WHERE s.status = 'unknown'
                  ORDER BY s.id LIMIT 1});
my $secret = 'meta-app-secret-amo-0123456789';
my $body = encode_json({ object => 'whatsapp_business_account', entry => [ { id => '1', changes => [ {
	field => 'messages', value => { messaging_product => 'whatsapp', statuses => [
		{ id => 'wamid.LOST1', status => 'delivered', timestamp => '' . (time() - 60),
		  recipient_id => '15550000001', biz_opaque_callback_data => $ref } ] } } ] } ] });
require Digest::SHA;
my $sig = 'sha256=' . Digest::SHA::hmac_sha256_hex($body, $secret);
(my $qbody = $body) =~ s/'/''/g;
is(q1(qq{SELECT result FROM revenue_engine.ingest_status_webhook('amo',
            jsonb_build_object('X-Hub-Signature-256', '$sig'), '$qbody')}),
	'applied', 'a callback carrying the send\'s key is applied to the unknown message');
is(q1(qq{SELECT m.status || ':' || m.message_id FROM revenue_engine.campaign_messages m
          JOIN revenue_engine.sends s ON s.tenant_id = m.tenant_id AND s.id = m.send_id
         WHERE s.idempotency_key = '$ref' AND s.channel_id = m.channel_id
           AND m.channel_id = (SELECT id FROM revenue_engine.channels WHERE name = 'amo')}),
	'delivered:wamid.LOST1', 'the message is delivered, with the provider\'s id');
is(q1(q{SELECT revenue_engine.record_message_status('wamid.LOST1', 'read', now() - interval '30 seconds', 'webhook')}),
	'applied', 'a later status finds it by its id');
is(q1(q{SELECT count(*) FROM revenue_engine.enrollment_history WHERE event = 'sent' AND reason LIKE 'reconciled%'}),
	1, 'the history says it was reconciled');
is(q1(q{SELECT count(*) FROM revenue_engine.sends WHERE status = 'unknown'}), $N,
	'the send itself stays unknown: it is never sent again');

# ===========================================================================
# A request that times out: it may have arrived.  At-most-once: unknown,
# requested once; at-least-once: requested again (same key) until its
# attempts are used up.
rx_mode(mode => 'stall', seconds => 5);
my $before = scalar(@{ Receiver::requests($rx) });
for my $ch ([ 'amo_t', 'at_most_once' ], [ 'alo_t', 'at_least_once' ])
{
	q1(qq{SELECT revenue_engine.create_channel('$ch->[0]', '$rx->{base}/$ch->[0]',
	          timeout_ms => 1000, retry_schedule => '{1 second}');
	      SELECT revenue_engine.set_channel_kind('$ch->[0]', 'sms', '$ch->[1]');
	      SELECT revenue_engine.enqueue_send('$ch->[0]', '{"to": "+15550000001"}', 'k-$ch->[0]')});
}
ok($node->poll_query_until('postgres',
		q{SELECT string_agg(c.name || ':' || s.status || ':' || s.attempts, ',' ORDER BY c.name)
		    FROM revenue_engine.sends s JOIN revenue_engine.channels c ON c.tenant_id = s.tenant_id AND c.id = s.channel_id
		   WHERE c.name IN ('amo_t', 'alo_t')}, 'alo_t:failed:2,amo_t:unknown:1', 60),
	'timeouts: at-most-once unknown after one attempt; at-least-once failed after two');
like(q1(q{SELECT s.last_error FROM revenue_engine.sends s JOIN revenue_engine.channels c
           ON c.tenant_id = s.tenant_id AND c.id = s.channel_id WHERE c.name = 'amo_t'}),
	qr/^outcome unknown \(.*\); at-most-once channel: not sent again$/, 'its error says why');
my %timeouts;
$timeouts{ $_->{path} }++ for @{ Receiver::requests($rx) }[ $before .. scalar(@{ Receiver::requests($rx) }) - 1 ];
is(join(',', map { "$_=$timeouts{$_}" } sort keys %timeouts), '/alo_t=2,/amo_t=1',
	'the provider saw the at-most-once send once, the at-least-once one twice');

# A WhatsApp error that a retry cannot cure is dead at once, even with a 5xx
rx_mode(mode => 'status', status => 500,
	body => '{"error": {"message": "(#131049) This message was not delivered", "code": 131049}}');
q1(q{SELECT revenue_engine.create_channel('wa_500', '} . $rx->{base} . q{/wa_500',
         retry_schedule => '{1 second,1 second}');
     SELECT revenue_engine.enqueue_send('wa_500', '{"to": "+15550000001"}', 'k-wa_500')});
ok($node->poll_query_until('postgres',
		q{SELECT s.status || ':' || s.attempts FROM revenue_engine.sends s
		    JOIN revenue_engine.channels c ON c.tenant_id = s.tenant_id AND c.id = s.channel_id
		   WHERE c.name = 'wa_500'}, 'failed:1', 60),
	'WhatsApp 131049 with HTTP 500: failed after one attempt, not retried');

done_testing();

sub poll_requests
{
	my ($n, $seconds) = @_;
	my $deadline = Time::HiRes::time() + $seconds;
	while (Time::HiRes::time() < $deadline)
	{
		return 1 if scalar(@{ Receiver::requests($rx) }) >= $n;
		usleep(100_000);
	}
	return 0;
}
