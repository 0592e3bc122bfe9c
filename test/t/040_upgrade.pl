# Upgrading in place: a database on 0.1.0 (upgrade/revenue_engine--0.1.0.sql,
# frozen as released) with data, under the new library, as for a user who
# installed the new package and restarted:
#
#  1. the library keeps every C symbol that any script in upgrade/ or the
#     current install script names (CREATE FUNCTION ... LANGUAGE C checks it);
#  2. before the update, the database's worker waits ("awaiting update",
#     logged once) and claims nothing; an old entry point whose statements
#     need the new tables raises 55000 naming ALTER EXTENSION ... UPDATE;
#  3. ALTER EXTENSION revenue_engine UPDATE keeps every row: each table's
#     rows (0.1.0's columns) are the same right after it, in its transaction;
#     status_history.result is 'applied' for the rows 0.1.0 wrote;
#  4. the extension's objects then equal a fresh 0.2.0 install's: pg_dump
#     --schema-only --binary-upgrade of both (every member object, its ACL,
#     comment and membership) compared object by object (SchemaDiff.pm prints
#     each object that differs), the members as pg_describe_object lists,
#     and the pg_extension_config_dump tables and filters;
#  5. the worker resumes: the events enqueued before the update and after it
#     are each delivered exactly once, the ones 0.1.0 had delivered are not
#     sent again, and the blast's queued sends go out.
use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = $ENV{TESTDIR} // '.';
require "$root/test/lib/Receiver.pm";
require "$root/test/lib/SchemaDiff.pm";

my $tmp    = PostgreSQL::Test::Utils::tempdir;
my $SECRET = 'whsec_' . encode_base64(join('', map { chr(($_ * 41 + 3) % 256) } 1 .. 24), '');
my $rx      = Receiver::start($root, $tmp, $SECRET);
my $rx_base = $rx->{base};
sub rx_requests { return Receiver::requests($rx); }
sub rx_count_by_id { my ($path) = @_; return Receiver::count_by_id($rx, $path); }

# ---------------------------------------------------------------------------
# The node: the new library, preloaded

my $node = PostgreSQL::Test::Cluster->new('upgrade');
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
# 1. Every C symbol a script names is in the library

{
	my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
	my $sharedir  = `$pg_config --sharedir`;
	chomp $sharedir;
	my @scripts = (glob("$root/upgrade/revenue_engine--*.sql"),
		glob("$sharedir/extension/revenue_engine--*.sql"));
	my %syms;
	for my $f (@scripts)
	{
		my $text = slurp_file($f);
		$syms{$2}{ ($f =~ m{([^/]+)$})[0] } = 1
		  while $text =~ /AS\s+'(MODULE_PATHNAME|\$libdir\/revenue_engine)'\s*,\s*'(\w+)'/g;
	}
	cmp_ok(scalar(keys %syms), '>=', 26, 'C symbols named by ' . scalar(@scripts) . ' scripts: ' . scalar(keys %syms));
	my @missing;
	for my $sym (sort keys %syms)
	{
		my ($rc, $out, $err) = $node->psql('postgres',
			"CREATE FUNCTION pg_temp.re_sym_check() RETURNS void LANGUAGE C AS '\$libdir/revenue_engine', '$sym'");
		push @missing, "$sym (named by " . join(', ', sort keys %{ $syms{$sym} }) . "): $err" if $rc != 0;
	}
	is(join("\n", @missing), '', 'the library has every C symbol the install and upgrade scripts name');
}

# ---------------------------------------------------------------------------
# 2. 0.1.0 with data, under the new library

$node->safe_psql('postgres', 'CREATE DATABASE upg');
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
q1('upg', "CREATE EXTENSION revenue_engine VERSION '0.1.0'");
is(q1('upg', "SELECT extversion FROM pg_extension WHERE extname = 'revenue_engine'"),
	'0.1.0', 'CREATE EXTENSION revenue_engine VERSION 0.1.0 under the new library');

ok( $node->poll_query_until('upg',
		q{SELECT state = 'awaiting update' FROM revenue_engine.workers WHERE database_name = 'upg'}),
	'the worker of the 0.1.0 database waits for the update');

my $U1 = '00000000-0000-0000-0000-000000000001';
my $U2 = '00000000-0000-0000-0000-000000000002';
q1('upg', qq{
	SELECT revenue_engine.set_usage_type('lessons', milestones => '{3,10}', daily_goal => 2);
	SELECT revenue_engine.set_user_profile('$U1', 'Europe/Paris', '{"lessons": 4}');
	SELECT revenue_engine.set_user_profile('$U2', 'America/New_York');
	SELECT revenue_engine.register_event_type('order_paid', 'an order was paid');
	SELECT revenue_engine.create_endpoint('hooks', '$rx_base/hook',
		event_types => '{order_paid}', signing_secret => '$SECRET',
		retry_schedule => '{1 second}');
	SELECT revenue_engine.create_channel('wa', '$rx_base/send', message_id_path => '{id}',
		retry_schedule => '{1 second}');
	SELECT revenue_engine.track_daily_usage('$U1', 'lessons', 2);
	SELECT revenue_engine.track_daily_usage('$U2', 'lessons', 5);
	SELECT revenue_engine.track_daily_usage('$U2', 'messages_sent', 7, current_date - 1);
});

# events: three that 0.1.0's worker had delivered (as it left them), three pending
my @delivered_before = map { q1('upg', "SELECT revenue_engine.enqueue_event('$U1', 'order_paid', '{\"n\": $_}')") } 1 .. 3;
my $ids = join(',', @delivered_before);
q1('upg', qq{
	UPDATE revenue_engine.deliveries
	   SET status = 'sent', attempts = 1, last_status = 200, sent_at = now()
	 WHERE event_id = ANY ('{$ids}'::uuid[]);
	UPDATE revenue_engine.webhook_events SET status = 'sent', attempts = 1, sent_at = now()
	 WHERE id = ANY ('{$ids}'::uuid[]);
});
my @pending_before = map { q1('upg', "SELECT revenue_engine.enqueue_event('$U2', 'order_paid', '{\"p\": $_}')") } 1 .. 3;

# a blast with queued sends, and one whose recipients 0.1.0 had moved on (sent,
# delivered, read: as its library left them, with their history)
q1('upg', q{SELECT * FROM revenue_engine.create_blast('wa', 'promo', recipients => '["+14155550101", "+14155550102"]', message => 'hi {{name}}')});
my $old_blast = q1('upg', q{SELECT blast_id FROM revenue_engine.create_blast('wa', 'old', recipients => '["+14155550201", "+14155550202", "+14155550203"]', message => 'earlier')});
q1('upg', qq{
	UPDATE revenue_engine.sends SET status = 'sent', attempts = 1
	 WHERE recipient_id IN (SELECT id FROM revenue_engine.blast_recipients WHERE blast_id = $old_blast);
	WITH r AS (
		SELECT id, blast_id, row_number() OVER (ORDER BY id) AS n
		  FROM revenue_engine.blast_recipients WHERE blast_id = $old_blast)
	UPDATE revenue_engine.blast_recipients b
	   SET status = (ARRAY['sent', 'delivered', 'read'])[r.n],
	       provider_message_id = 'wamid.old' || r.n,
	       sent_at = now() - interval '1 hour',
	       delivered_at = CASE WHEN r.n >= 2 THEN now() - interval '50 minutes' END,
	       read_at = CASE WHEN r.n >= 3 THEN now() - interval '40 minutes' END
	  FROM r WHERE b.id = r.id;
	INSERT INTO revenue_engine.status_history
	       (recipient_id, blast_id, message_id, old_status, new_status, occurred_at, source)
	SELECT b.id, b.blast_id, b.provider_message_id, 'pending', 'sent', b.sent_at, 'send'
	  FROM revenue_engine.blast_recipients b WHERE b.blast_id = $old_blast
	UNION ALL
	SELECT b.id, b.blast_id, b.provider_message_id, 'sent', 'delivered', b.delivered_at, 'webhook'
	  FROM revenue_engine.blast_recipients b WHERE b.blast_id = $old_blast AND b.delivered_at IS NOT NULL;
});
my $funnel_before = q1('upg', "SELECT sent, delivered, read FROM revenue_engine.blast_funnel WHERE blast_id = $old_blast");
is($funnel_before, '3|2|1', '0.1.0: the old blast\'s funnel counts its recipients\' statuses');

sleep 2;
is(q1('upg', q{SELECT count(*) FROM revenue_engine.deliveries WHERE status = 'pending'}),
	'3', 'the waiting worker claimed nothing');
is(scalar(@{ rx_requests() }), 0, 'nothing reached the receiver before the update');
my $log = slurp_file($node->logfile);
my @waits = $log =~ /database "upg" has version 0\.1\.0 of the extension, the library is version 0\.2\.0: the delivery worker waits for ALTER EXTENSION revenue_engine UPDATE/g;
is(scalar(@waits), 1, 'the worker logged the version mismatch once');

my ($rc, $out, $err) = $node->psql('upg', 'SELECT revenue_engine.apply_parked_statuses()',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/55000.*revenue_engine 0\.1\.0 is installed in database "upg" but the library is version 0\.2\.0.*HINT:\s+Run ALTER EXTENSION revenue_engine UPDATE/s,
	'an old entry point that needs the new tables: 55000, run ALTER EXTENSION revenue_engine UPDATE');

# ---------------------------------------------------------------------------
# 3. The update keeps every row

# every table of 0.1.0 with its columns then
my %cols = map { split /\|/, $_, 2 } split /\n/, q1('upg', q{
	SELECT c.oid::regclass, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
	  FROM pg_depend d
	  JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
	  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'revenue_engine')
	   AND c.relkind = 'r'
	 GROUP BY 1});
sub table_digests
{
	my $sql = join("\nUNION ALL\n",
		map {
			"SELECT '$_', count(*), md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM (SELECT $cols{$_} FROM $_) x"
		} sort keys %cols);
	return $sql;
}
my $digest_sql = table_digests();
my $before = q1('upg', $digest_sql);
my %rows_before = map { (split /\|/)[ 0, 1 ] } split /\n/, $before;
cmp_ok(scalar(keys %cols), '>=', 18, scalar(keys %cols) . ' tables in 0.1.0');
cmp_ok($rows_before{'revenue_engine.webhook_events'} + $rows_before{'revenue_engine.blast_recipients'}
	  + $rows_before{'revenue_engine.status_history'} + $rows_before{'revenue_engine.daily_usage'}, '>=', 15,
	'0.1.0 holds data: events, recipients, history, usage');

# the update and the digests in one transaction: the resumed worker changes nothing yet
my $results_sql = q{SELECT 'results ' || coalesce(string_agg(DISTINCT result, ','), '') || ' ' || count(*) FROM revenue_engine.status_history};
my $after = q1('upg', "BEGIN;\nALTER EXTENSION revenue_engine UPDATE;\n$digest_sql;\n$results_sql;\nCOMMIT;");
my $results = $after =~ s/\n(results .*)$// ? $1 : '';
is($after, $before, 'ALTER EXTENSION revenue_engine UPDATE keeps every row of every table (0.1.0\'s columns)');
is($results, 'results applied ' . $rows_before{'revenue_engine.status_history'},
	'status_history.result: 0.1.0\'s rows are applied changes');
is(q1('upg', "SELECT extversion FROM pg_extension WHERE extname = 'revenue_engine'"), '0.2.0', 'updated to 0.2.0');
is(q1('upg', "SELECT sent, delivered, read FROM revenue_engine.blast_funnel WHERE blast_id = $old_blast"),
	$funnel_before, 'the funnel counters are kept');

# ---------------------------------------------------------------------------
# 4. The objects equal a fresh install's

q1('fresh', 'CREATE EXTENSION revenue_engine');
sub schema_dump
{
	my ($db) = @_;
	my $file = "$tmp/$db.schema.sql";
	$node->command_ok(
		[ 'pg_dump', '--schema-only', '--binary-upgrade', '--no-sync', '-f', $file, '-d', $node->connstr($db) ],
		"pg_dump --schema-only --binary-upgrade $db");
	return slurp_file($file);
}
my $report = SchemaDiff::compare(schema_dump('upg'), schema_dump('fresh'), 'upgraded', 'fresh');
ok($report eq '', 'the upgraded extension\'s objects (definitions, ACLs, comments, membership) equal a fresh install\'s')
  or diag("objects that differ, upgraded (-) against fresh (+):\n$report");

# two sorted lists of lines: the same, or diag of the lines only in one
sub same_lines
{
	my ($got, $want, $name) = @_;
	my %g = map { $_ => 1 } split /\n/, $got;
	my %w = map { $_ => 1 } split /\n/, $want;
	my @only_g = grep { !$w{$_} } sort keys %g;
	my @only_w = grep { !$g{$_} } sort keys %w;
	ok(!@only_g && !@only_w, $name)
	  or diag(join("\n", (map { "only in upgraded: $_" } @only_g), (map { "only in fresh: $_" } @only_w)));
}

my $members_sql = q{
	SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
	  FROM pg_depend d
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'revenue_engine')
	 ORDER BY 1};
same_lines(q1('upg', $members_sql), q1('fresh', $members_sql), 'the same member objects');
my $config_sql = q{
	SELECT c::regclass::text || ' ' || coalesce(nullif(f, ''), '(all rows)')
	  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, f)
	 WHERE e.extname = 'revenue_engine' ORDER BY 1};
same_lines(q1('upg', $config_sql), q1('fresh', $config_sql), 'the same tables and sequences for pg_dump (pg_extension_config_dump)');
my $initprivs_sql = q{
	SELECT pg_describe_object(i.classoid, i.objoid, i.objsubid) || ' ' || i.privtype::text || ' ' || i.initprivs::text
	  FROM pg_init_privs i
	  JOIN pg_depend d ON d.classid = i.classoid AND d.objid = i.objoid AND d.deptype = 'e'
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'revenue_engine')
	 ORDER BY 1};
same_lines(q1('upg', $initprivs_sql), q1('fresh', $initprivs_sql), 'the same initial privileges (pg_init_privs)');

# ---------------------------------------------------------------------------
# 5. The worker resumes

ok( $node->poll_query_until('upg',
		q{SELECT count(*) = 0 FROM revenue_engine.deliveries WHERE status <> 'sent'}),
	'the events enqueued before the update are delivered after it');
my @pending_after = map { q1('upg', "SELECT revenue_engine.enqueue_event('$U2', 'order_paid', '{\"q\": $_}')") } 1 .. 3;
ok( $node->poll_query_until('upg',
		q{SELECT count(*) = 9 FROM revenue_engine.deliveries WHERE status = 'sent'}),
	'the events enqueued after the update are delivered');
ok( $node->poll_query_until('upg',
		q{SELECT count(*) = 0 FROM revenue_engine.sends WHERE status <> 'sent'}),
	'the blast\'s queued sends go out');

my $hooks = rx_count_by_id('/hook');
is(join(',', map { $hooks->{$_} // 0 } @pending_before, @pending_after), '1,1,1,1,1,1',
	'each event enqueued before or after the update reached the receiver exactly once');
is(join(',', map { $hooks->{$_} // 0 } @delivered_before), '0,0,0',
	'the events 0.1.0 had delivered are not sent again');
is(scalar(keys %$hooks), 6, 'no other event was posted');
is(scalar(grep { $_->{path} eq '/send' } @{ rx_requests() }), 2, 'two sends posted (the queued blast)');
is(scalar(grep { $_->{path} eq '/hook' && !$_->{verified} } @{ rx_requests() }), 0, 'every event signed with the endpoint\'s secret');
is(q1('upg', q{SELECT count(*) FROM revenue_engine.blast_recipients WHERE status = 'sent' AND provider_message_id IS NOT NULL
	AND blast_id <> } . $old_blast), '2', 'the send outcomes reached the recipients (0.2.0\'s status path)');

$log = slurp_file($node->logfile);
like($log, qr/extension updated to 0\.2\.0, the delivery worker resumes/, 'the worker logged that it resumes');
@waits = $log =~ /database "upg" has version 0\.1\.0 of the extension/g;
is(scalar(@waits), 1, 'the mismatch was logged once in all');
is(q1('upg', 'SELECT revenue_engine.apply_parked_statuses()'), '0', 'the entry point works after the update');

$node->stop;
done_testing();
