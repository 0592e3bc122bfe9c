# pg_dump / pg_restore of a database with the extension (as a superuser: the
# tenant tables have row level security, which a superuser's dump bypasses):
#
#  1. every table registered with pg_extension_config_dump comes back with
#     the same rows (configuration: endpoints, channels, usage types, event
#     types, profiles, role bindings; data: usage, events, deliveries, the
#     attempt log, blasts, recipients, history, poll queue);
#  2. the funnel (blast_counters is not dumped) is counted again from the
#     restored recipients by the insert trigger, to the same numbers, and
#     the campaign counters (campaign_counters, not dumped) from the restored
#     enrollments, campaign messages and history;
#  3. every identity sequence comes back: a new endpoint, channel, blast,
#     attempt get ids above the restored ones;
#  4. the restored database works: its worker starts, re-sends nothing that
#     was delivered, and delivers what the usage path and enqueue_event
#     write after the restore, once; a bound role still acts for its tenant.
use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root   = $ENV{TESTDIR} // '.';
require "$root/test/lib/Receiver.pm";
my $tmp    = PostgreSQL::Test::Utils::tempdir;
my $SECRET = 'whsec_' . encode_base64(join('', map { chr(($_ * 29 + 5) % 256) } 1 .. 24), '');
my $rx      = Receiver::start($root, $tmp, $SECRET);
my $rx_base = $rx->{base};
sub rx_requests { return Receiver::requests($rx); }
sub rx_count_by_id { return Receiver::count_by_id($rx, '/hook'); }

my $node = PostgreSQL::Test::Cluster->new('dump_restore');
$node->init;
$node->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'revenue_engine'
max_worker_processes = 16
timezone = 'UTC'
revenue_engine.http_allow_private = on
EOC
$node->start;

sub q1 { my ($db, $sql) = @_; return $node->safe_psql($db, $sql); }

# ---------------------------------------------------------------------------
# The source database: configuration and data, everything delivered

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('postgres', 'CREATE ROLE app_acme LOGIN');
q1('src', 'CREATE EXTENSION revenue_engine');
$node->safe_psql('postgres', 'GRANT revenue_engine_user TO app_acme');
ok( $node->poll_query_until('src',
		q{SELECT count(*) = 1 FROM revenue_engine.workers WHERE database_name = 'src' AND state IN ('idle', 'delivering', 'maintenance')}),
	'the source database has its worker');

my $U1 = '00000000-0000-0000-0000-000000000001';
my $U2 = '00000000-0000-0000-0000-000000000002';
q1('src', qq{
	SELECT revenue_engine.set_usage_type('lessons', milestones => '{3,10,20}', daily_goal => 2);
	SELECT revenue_engine.set_user_profile('$U1', 'Europe/Paris', '{"lessons": 4}');
	SELECT revenue_engine.set_user_profile('$U2', 'America/New_York');
	SELECT revenue_engine.register_event_type('order_paid', 'an order was paid');
	SELECT revenue_engine.create_endpoint('hooks', '$rx_base/hook', signing_secret => '$SECRET');
	SELECT revenue_engine.create_endpoint('spare', '$rx_base/spare', event_types => '{order_paid}',
		signing_secret => '$SECRET');
	SELECT revenue_engine.create_channel('wa', '$rx_base/send', message_id_path => '{id}');
	SELECT revenue_engine.bind_role('app_acme', 'acme');
	SELECT revenue_engine.track_daily_usage('$U1', 'lessons', 4);
	SELECT revenue_engine.track_daily_usage('$U2', 'lessons', 12);
	SELECT revenue_engine.track_daily_usage('$U2', 'messages_sent', 7, current_date - 1);
	SELECT revenue_engine.enqueue_event('$U1', 'order_paid', '{"n": 1}');
	SELECT * FROM revenue_engine.create_blast('wa', 'promo',
		recipients => '["+14155550101", "+14155550102", "+14155550103"]', message => 'hi');
});
ok( $node->poll_query_until('src',
		q{SELECT (SELECT count(*) FROM revenue_engine.deliveries WHERE status <> 'sent')
		       + (SELECT count(*) FROM revenue_engine.sends WHERE status <> 'sent') = 0}),
	'the source database delivered its events and sends');
my $delivered = rx_count_by_id();
cmp_ok(scalar(keys %$delivered), '>=', 4, scalar(keys %$delivered) . ' events delivered before the dump');

# every table pg_dump restores, and the sequences
my $config_tables = q1('src', q{
	SELECT string_agg(c::regclass::text, ' ' ORDER BY c::regclass::text)
	  FROM pg_extension e, unnest(e.extconfig) AS c
	 WHERE e.extname = 'revenue_engine' AND (SELECT relkind FROM pg_class WHERE oid = c) = 'r'});
my @tables = split / /, $config_tables;
my $digest_sql = join("\nUNION ALL\n",
	map { "SELECT '$_', count(*), md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM $_ x" } @tables);
my $seq_sql = q{
	SELECT c::regclass::text || ' ' || s.last_value
	  FROM pg_extension e, unnest(e.extconfig) AS c, LATERAL (SELECT * FROM pg_sequences
	        WHERE schemaname = 'revenue_engine' AND sequencename = (SELECT relname FROM pg_class WHERE oid = c)) s
	 WHERE e.extname = 'revenue_engine'
	 ORDER BY 1};
my $funnel_sql = q{SELECT * FROM revenue_engine.blast_funnel ORDER BY blast_id};

# Campaign rows written directly (a paused campaign: the worker runs none of
# it); campaign_counters is not dumped either, and is counted again from the
# restored enrollments, messages and history by their row triggers.
q1('src', q{
	INSERT INTO revenue_engine.campaigns (tenant_id, name, status) VALUES ('acme', 'dump', 'paused');
	INSERT INTO revenue_engine.contacts (tenant_id, external_ref) VALUES ('acme', 'k1'), ('acme', 'k2');
	INSERT INTO revenue_engine.enrollments (tenant_id, campaign_id, contact_id, version, status, ended_at)
	SELECT 'acme', c.id, k.id, 1, CASE k.external_ref WHEN 'k1' THEN 'active' ELSE 'completed' END,
	       CASE k.external_ref WHEN 'k1' THEN NULL ELSE now() END
	  FROM revenue_engine.campaigns c, revenue_engine.contacts k WHERE c.name = 'dump' AND k.tenant_id = 'acme';
	INSERT INTO revenue_engine.campaign_messages (tenant_id, send_id, enrollment_id, campaign_id, version, step,
	                                              contact_id, channel_id, status, sent_at)
	SELECT 'acme', 1000 + e.id, e.id, e.campaign_id, 1, 1, e.contact_id, 1, 'read', now()
	  FROM revenue_engine.enrollments e WHERE e.tenant_id = 'acme';
	INSERT INTO revenue_engine.enrollment_history (tenant_id, enrollment_id, campaign_id, version, step, event)
	SELECT 'acme', e.id, e.campaign_id, 1, 1, 'deferred' FROM revenue_engine.enrollments e WHERE e.tenant_id = 'acme';
});
my $campaign_counters_sql = q{
	SELECT campaign_id, version, step, template_id, template_version, sum(enrolled), sum(active), sum(completed),
	       sum(messages), sum(sent), sum(delivered), sum(read), sum(deferred)
	  FROM revenue_engine.campaign_counters GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5};

for my $t (qw(endpoints channels usage_types event_types user_profiles role_tenants daily_usage
	lifetime_usage milestones_reached webhook_events deliveries delivery_attempts blasts
	blast_recipients status_history sends))
{
	ok((grep { $_ eq "revenue_engine.$t" } @tables), "$t is dumped");
}
my $seqs = q1('src', $seq_sql);
like($seqs, qr/endpoints_id_seq 2\b/, 'identity sequences are dumped (endpoints_id_seq at 2)');
my $src_digests = q1('src', $digest_sql);
my $src_funnel  = q1('src', $funnel_sql);
like($src_funnel, qr/\|3\|/, 'the source blast\'s funnel counts its 3 recipients');
my $src_campaign_counters = q1('src', $campaign_counters_sql);
like($src_campaign_counters, qr/\|0\|0\|0\|2\|1\|1\|0\|0\|0\|0\|0\n.*\|1\|0\|0\|0\|0\|0\|2\|2\|2\|2\|2$/s,
	'the source campaign\'s counters: 2 enrolled, 1 active, 1 completed; 2 messages read; 2 deferred');
ok(!(grep { $_ eq 'revenue_engine.campaign_counters' } @tables), 'campaign_counters is not dumped');

# ---------------------------------------------------------------------------
# pg_dump -Fc, pg_restore into a new database

$node->command_ok([ 'pg_dump', '-Fc', '--no-sync', '-f', "$tmp/src.dump", '-d', $node->connstr('src') ],
	'pg_dump -Fc (superuser)');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst'), "$tmp/src.dump" ],
	'pg_restore into a new database');

is(q1('dst', $digest_sql), $src_digests, 'every dumped table has the same rows after the restore (' . scalar(@tables) . ' tables)');
is(q1('dst', $seq_sql), $seqs, 'every dumped identity sequence has the same value');
is(q1('dst', $funnel_sql), $src_funnel, 'the funnel counters were counted again from the restored recipients');
is(q1('dst', $campaign_counters_sql), $src_campaign_counters,
	'the campaign counters were counted again from the restored enrollments, messages and history');

# ---------------------------------------------------------------------------
# The restored database works

ok( $node->poll_query_until('dst',
		q{SELECT count(*) = 1 FROM revenue_engine.workers WHERE database_name = 'dst' AND state IN ('idle', 'delivering', 'maintenance')}),
	'the restored database has its worker');

my $max_ep = q1('dst', 'SELECT max(id) FROM revenue_engine.endpoints');
q1('dst', "SELECT revenue_engine.register_event_type('never_sent')");
my $new_ep = q1('dst', "SELECT revenue_engine.create_endpoint('late', '$rx_base/late', event_types => '{never_sent}')");
cmp_ok($new_ep, '>', $max_ep, "a new endpoint gets a fresh id ($new_ep > $max_ep)");
my $max_ch = q1('dst', 'SELECT max(id) FROM revenue_engine.channels');
my $new_ch = q1('dst', "SELECT revenue_engine.create_channel('wa2', '$rx_base/send2', enabled => false)");
cmp_ok($new_ch, '>', $max_ch, "a new channel gets a fresh id ($new_ch > $max_ch)");
my ($max_blast, $max_rcpt) = split /\|/, q1('dst', 'SELECT (SELECT max(id) FROM revenue_engine.blasts), (SELECT max(id) FROM revenue_engine.blast_recipients)');
my $new_blast = q1('dst', q{SELECT blast_id FROM revenue_engine.create_blast('wa2', 'later', recipients => '["+14155550109"]', message => 'x')});
cmp_ok($new_blast, '>', $max_blast, "a new blast gets a fresh id ($new_blast > $max_blast)");
cmp_ok(q1('dst', "SELECT min(id) FROM revenue_engine.blast_recipients WHERE blast_id = $new_blast"), '>', $max_rcpt,
	'its recipients get fresh ids');

is($node->safe_psql('dst', 'SET ROLE app_acme; SELECT revenue_engine.current_tenant()'), 'acme',
	'the restored role binding holds');

my $r = q1('dst', "SELECT revenue_engine.track_daily_usage('$U1', 'lessons', 6)::text");
like($r, qr/"lifetime_total": 10\b/, 'the usage path after the restore goes on from the restored counters (4 + 6)');
like($r, qr/"events": [1-9]/, 'and crosses milestone 10: an event');
my $ev = q1('dst', "SELECT revenue_engine.enqueue_event('$U2', 'order_paid', '{\"after\": true}')");
my $max_attempt = q1('src', 'SELECT max(id) FROM revenue_engine.delivery_attempts');
ok( $node->poll_query_until('dst',
		q{SELECT count(*) = 0 FROM revenue_engine.deliveries WHERE status <> 'sent'}),
	'the restored database\'s worker delivers the new events');
cmp_ok(q1('dst', 'SELECT min(id) FROM revenue_engine.delivery_attempts WHERE started_at > (SELECT max(started_at) FROM revenue_engine.delivery_attempts WHERE id <= ' . $max_attempt . ')'),
	'>', $max_attempt, 'new attempts get fresh ids');
sleep 1;
my $after = rx_count_by_id();
is($after->{$ev} // 0, 1, 'the event enqueued after the restore reached the receiver once');
is(join(',', map { $after->{$_} } sort keys %$delivered), join(',', map { 1 } sort keys %$delivered),
	'nothing delivered before the dump was sent again');
is(join(',', grep { $after->{$_} != 1 } sort keys %$after), '', 'every event reached the receiver once, before the dump or after the restore');
is(scalar(grep { $_->{path} eq '/spare' } @{ rx_requests() }), 2, 'the second endpoint got its order_paid events once each');

# ---------------------------------------------------------------------------
# A dump taken from 0.1.0, restored under 0.2.0: CREATE EXTENSION installs
# 0.2.0 and the rows load, but 0.1.0 did not dump the identity sequences;
# the README's statement sets them past the restored ids.

$node->safe_psql('postgres', 'CREATE DATABASE old');
q1('old', "CREATE EXTENSION revenue_engine VERSION '0.1.0'");
q1('old', qq{
	SELECT revenue_engine.create_endpoint('a', '$rx_base/a', enabled => false);
	SELECT revenue_engine.create_endpoint('b', '$rx_base/b', enabled => false);
});
$node->command_ok([ 'pg_dump', '-Fc', '--no-sync', '-f', "$tmp/old.dump", '-d', $node->connstr('old') ],
	'pg_dump -Fc of a 0.1.0 database');
$node->safe_psql('postgres', 'CREATE DATABASE old_restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('old_restored'), "$tmp/old.dump" ],
	'pg_restore of the 0.1.0 dump under 0.2.0');
is(q1('old_restored', q{SELECT extversion || ' ' || (SELECT count(*) FROM revenue_engine.endpoints)
	FROM pg_extension WHERE extname = 'revenue_engine'}), '0.2.0 2', 'the 0.1.0 dump restores as 0.2.0 with its rows');
is(q1('old_restored', 'SELECT last_value || \' \' || is_called FROM revenue_engine.endpoints_id_seq'), '1 false',
	'0.1.0 did not dump the identity sequences');
q1('old_restored', <<'EOSQL');
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS tbl, a.attname AS col,
               pg_get_serial_sequence(c.oid::regclass::text, a.attname) AS seq
          FROM pg_class c
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attidentity <> ''
         WHERE c.relnamespace = 'revenue_engine'::regnamespace
    LOOP
        EXECUTE format('SELECT setval(%L, coalesce((SELECT max(%I) FROM %s), 0) + 1, false)',
                       r.seq, r.col, r.tbl);
    END LOOP;
END
$$;
EOSQL
is(q1('old_restored', "SELECT revenue_engine.create_endpoint('c', '$rx_base/c', enabled => false)"), '3',
	'after the README\'s setval statement a new endpoint gets a fresh id');

$node->stop;
done_testing();
