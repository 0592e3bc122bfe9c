# The delivery worker under crashes and DDL, against the test receiver:
#  1. kill -9 of the worker mid-flight (the postmaster reinitializes): every
#     event is delivered afterwards, none is stuck, duplicates are counted;
#  2. the same with an immediate shutdown mid-flight and a restart;
#  3. DROP EXTENSION ... CASCADE with a busy worker: it finishes quickly, the
#     worker exits, CREATE EXTENSION starts a worker again that delivers;
#  4. DROP DATABASE with a busy worker succeeds within seconds;
#  5. two databases, each served by its own worker, each endpoint gets exactly
#     its database's events.
# Losses fail the test; duplicates (at-least-once) are reported and bounded.
use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $NEVENTS   = 20_000;    # parts 1 and 2
my $MAX_DUPS  = 1000;      # far above what can be in flight or unrecorded
my $WORKER_BT = 'revenue_engine worker';

# ---------------------------------------------------------------------------
# The receiver.
my $dir     = PostgreSQL::Test::Utils::tempdir;
my $rx_port_file = "$dir/rx.port";
my $rx_log  = "$dir/rx.jsonl";
my $rx = IPC::Run::start(
	[
		'python3', ($ENV{TESTDIR} // '.') . '/test/receiver/receiver.py',
		'--port', '0', '--port-file', $rx_port_file, '--log', $rx_log
	],
	'<', \undef, '>', "$dir/rx.out", '2>', "$dir/rx.err");
for (1 .. 300)
{
	last if -s $rx_port_file;
	usleep(50_000);
}
# the receiver goes away with the test, even when the test dies
END
{
	local $?;    # keep the script's exit status (kill_kill reaps the child)
	$rx->kill_kill if $rx && $rx->pumpable;
}
ok(-s $rx_port_file, 'the receiver is listening');
my $rx_port = PostgreSQL::Test::Utils::slurp_file($rx_port_file);
$rx_port =~ s/\s+//g;
my $rx_base = "http://127.0.0.1:$rx_port";
my $http    = HTTP::Tiny->new(timeout => 30);

sub rx_post
{
	my ($path, $body) = @_;
	my $r = $http->post("$rx_base/_control/$path",
		{ content => encode_json($body), headers => { 'content-type' => 'application/json' } });
	die "receiver $path: $r->{status} $r->{content}" unless $r->{success};
	return decode_json($r->{content});
}
sub rx_mode  { rx_post('mode', {@_}) }
sub rx_reset { rx_post('reset', {}) }

sub rx_stats
{
	my $r = $http->get("$rx_base/_control/stats");
	die "receiver stats: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

# path => { webhook_id => times received }, from the receiver's log
sub rx_received
{
	my %by_path;
	my $text = PostgreSQL::Test::Utils::slurp_file($rx_log);
	for my $line (split /\n/, $text)
	{
		next unless length $line;
		my $r = decode_json($line);
		$by_path{ $r->{path} }{ $r->{webhook_id} // '(none)' }++;
	}
	return \%by_path;
}

# ---------------------------------------------------------------------------
# Helpers on the node.
sub elapsed_since { sprintf('%.1f', Time::HiRes::time() - $_[0]) }

# Poll $query until it returns $expected, for at most $seconds; true if it did.
sub poll_for
{
	my ($node, $db, $query, $expected, $seconds) = @_;
	my $deadline = Time::HiRes::time() + $seconds;
	my ($out, $err) = ('', '');
	while (Time::HiRes::time() < $deadline)
	{
		$node->psql($db, $query, stdout => \$out, stderr => \$err);
		return 1 if $out eq $expected && $err eq '';
		usleep(100_000);
	}
	diag "poll timed out after $seconds s: $query\nexpected: $expected\ngot: $out\nstderr: $err";
	return 0;
}

sub worker_count
{
	my ($node, $db) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$WORKER_BT' AND datname = '$db'");
}

sub setup_database
{
	my ($node, $db, $path) = @_;
	$node->safe_psql($db, 'CREATE EXTENSION revenue_engine');
	$node->safe_psql($db, "SELECT revenue_engine.register_event_type('bench_event')");
	$node->safe_psql($db,
		"SELECT revenue_engine.create_endpoint('sink', '$rx_base$path', "
		  . "retry_schedule => '{1 second,1 second,1 second}')");
}

sub enqueue
{
	my ($node, $db, $part, $n) = @_;
	$node->safe_psql($db,
		"SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 'bench_event', "
		  . "jsonb_build_object('n', g, 'part', $part))) FROM generate_series(1, $n) g");
}

# Wait until nothing of $db is pending or sending (at most $seconds).
sub wait_all_done
{
	my ($node, $db, $seconds) = @_;
	return poll_for($node, $db,
		q{SELECT count(*) FROM revenue_engine.deliveries WHERE status IN ('pending', 'sending')},
		'0', $seconds);
}

# Checks after a part's events should all be delivered: every event sent, no
# delivery pending/sending/dead, every event id received at least once on
# $path and nothing else received there.  Returns the number of duplicates.
sub check_delivered
{
	my ($node, $db, $part, $n, $path, $label) = @_;

	is( $node->safe_psql($db,
			"SELECT count(*) FILTER (WHERE status = 'sent') || '/' || count(*)
			   FROM revenue_engine.webhook_events WHERE event_data->>'part' = '$part'"),
		"$n/$n", "$label: all $n events are 'sent'");
	is( $node->safe_psql($db,
			q{SELECT count(*) FROM revenue_engine.deliveries WHERE status <> 'sent'}),
		'0', "$label: no delivery pending, sending or dead");

	my %db_ids = map { $_ => 1 } split /\n/, $node->safe_psql($db,
		"SELECT id FROM revenue_engine.webhook_events WHERE event_data->>'part' = '$part'");
	my $got = rx_received()->{$path} // {};
	my @lost  = grep { !$got->{$_} } keys %db_ids;
	my @alien = grep { !$db_ids{$_} } keys %$got;
	my @dup   = grep { $got->{$_} > 1 } keys %$got;
	my $dups  = 0;
	$dups += $got->{$_} - 1 for @dup;
	is(scalar(@lost), 0, "$label: every event id was received at least once on $path")
	  or diag 'lost, e.g.: ' . join(', ', @lost[ 0 .. ($#lost < 4 ? $#lost : 4) ]);
	is(scalar(@alien), 0, "$label: $path received no other webhook-id")
	  or diag 'unexpected, e.g.: ' . join(', ', @alien[ 0 .. ($#alien < 4 ? $#alien : 4) ]);
	return ($dups, scalar(@dup));
}

# ---------------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('delivery_crash');
$node->init;
$node->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'revenue_engine'
revenue_engine.http_allow_private = on
max_worker_processes = 16
restart_after_crash = on
timezone = 'UTC'
EOC
$node->start;
setup_database($node, 'postgres', '/hook');
ok(poll_for($node, 'postgres',
		"SELECT count(*) FROM revenue_engine.workers WHERE database_name = 'postgres'", '1', 30),
	'CREATE EXTENSION started the worker of database postgres');

# Enqueue $NEVENTS with the receiver stalling 0.2 s per request, wait until it
# has seen some of them, and return the worker's pid and what was delivered.
sub start_busy_delivery
{
	my ($part, $label) = @_;
	rx_reset();
	rx_mode(mode => 'stall', seconds => 0.2);
	enqueue($node, 'postgres', $part, $NEVENTS);
	my $t0 = Time::HiRes::time();
	my $seen = 0;
	while (Time::HiRes::time() - $t0 < 60)
	{
		$seen = rx_stats()->{requests};
		last if $seen >= 600;
		usleep(50_000);
	}
	cmp_ok($seen, '>=', 600, "$label: the receiver has seen requests before the crash");
	my ($pid, $in_flight) = split /\|/, $node->safe_psql('postgres',
		"SELECT pid, in_flight FROM revenue_engine.workers WHERE database_name = 'postgres'");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE pid = $pid AND backend_type = '$WORKER_BT'"),
		'1', "$label: revenue_engine.workers shows the live worker (pid $pid)");
	my ($sent, $sending) = split /\|/, $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE d.status = 'sent'), count(*) FILTER (WHERE d.status = 'sending')
		   FROM revenue_engine.deliveries d JOIN revenue_engine.webhook_events e
		     ON e.tenant_id = d.tenant_id AND e.id = d.event_id
		  WHERE e.event_data->>'part' = '$part'");
	ok($sent < $NEVENTS && $sending > 0,
		"$label: mid-flight ($sent of $NEVENTS sent, $sending sending, in_flight $in_flight)");
	return ($pid, $seen);
}

# After the restart: the worker is back and delivers everything.
sub finish_after_crash
{
	my ($part, $label, $old_pid, $t_crash) = @_;
	ok(poll_for($node, 'postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$WORKER_BT'"
			  . " AND datname = 'postgres' AND pid <> $old_pid", '1', 60),
		"$label: a new worker runs after the restart");
	ok(wait_all_done($node, 'postgres', 120),
		"$label: every delivery done after the crash");
	note "$label: all delivered " . elapsed_since($t_crash) . ' s after the crash';
	my ($dups, $dup_ids) = check_delivered($node, 'postgres', $part, $NEVENTS, '/hook', $label);
	my $stats = rx_stats();
	my $retried = $node->safe_psql('postgres',
		"SELECT count(*) FROM revenue_engine.deliveries d JOIN revenue_engine.webhook_events e
		     ON e.tenant_id = d.tenant_id AND e.id = d.event_id
		  WHERE e.event_data->>'part' = '$part' AND d.attempts > 1");
	diag "$label: $dups duplicate request(s) on $dup_ids event id(s); "
	  . "receiver stats: $stats->{requests} requests, $stats->{unique_webhook_ids} ids, "
	  . "$stats->{duplicates} duplicates; $retried deliveries took more than one attempt";
	is($stats->{duplicates}, $dups, "$label: the receiver's duplicate count agrees with its log");
	cmp_ok($dups, '<', $MAX_DUPS, "$label: duplicates ($dups) stay below $MAX_DUPS");
	cmp_ok($dup_ids, '<=', $retried,
		"$label: every duplicated event is one the restarted worker reclaimed");
	return $dups;
}

# ---------------------------------------------------------------------------
# Part 1: kill -9 of the worker mid-flight.
my %dups;
{
	my $label = 'kill -9';
	my ($pid) = start_busy_delivery(1, $label);
	my $offset = -s $node->logfile;
	my $t_crash = Time::HiRes::time();
	is(kill('KILL', $pid), 1, "$label: SIGKILL sent to the worker $pid");
	rx_mode(mode => 'ok');
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
		"$label: the node accepts connections after crash recovery");
	note "$label: connections accepted " . elapsed_since($t_crash) . ' s after the kill';
	$dups{1} = finish_after_crash(1, $label, $pid, $t_crash);
}

# ---------------------------------------------------------------------------
# Part 2: immediate shutdown mid-flight, then start.
{
	my $label = 'stop immediate';
	my ($pid) = start_busy_delivery(2, $label);
	my $t_crash = Time::HiRes::time();
	$node->stop('immediate');
	rx_mode(mode => 'ok');
	$node->start;
	$dups{2} = finish_after_crash(2, $label, $pid, $t_crash);
}

# ---------------------------------------------------------------------------
# Part 3: DROP EXTENSION ... CASCADE with a busy worker, then CREATE EXTENSION.
{
	my $label = 'DROP EXTENSION';
	rx_reset();
	rx_mode(mode => 'stall', seconds => 5);
	enqueue($node, 'postgres', 3, 2000);
	ok(poll_for($node, 'postgres',
			"SELECT count(*) > 0 FROM revenue_engine.deliveries WHERE status = 'sending'", 't', 30),
		"$label: the worker is busy (deliveries in 'sending')");
	my $pid = $node->safe_psql('postgres',
		"SELECT pid FROM revenue_engine.workers WHERE database_name = 'postgres'");
	ok($pid, "$label: the worker's pid is $pid");

	my $log_offset = -s $node->logfile;
	my $t0 = Time::HiRes::time();
	my ($ret, $out, $err, $timed_out);
	$ret = $node->psql('postgres', 'DROP EXTENSION revenue_engine CASCADE',
		stdout => \$out, stderr => \$err, timeout => 60, timed_out => \$timed_out);
	my $took = Time::HiRes::time() - $t0;
	ok(!$timed_out && $ret == 0, "$label: DROP EXTENSION CASCADE succeeds")
	  or diag "ret $ret, stderr: $err";
	cmp_ok($took, '<', 15, sprintf('%s: it took %.2f s (< 15 s)', $label, $took));

	$t0 = Time::HiRes::time();
	ok(poll_for($node, 'postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$WORKER_BT' AND datname = 'postgres'",
			'0', 30),
		"$label: the database's worker exits");
	note "$label: the worker was gone " . elapsed_since($t0) . ' s after the DROP';
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid"),
		'0', "$label: the busy worker $pid is gone");
	# The worker stops on its own check of the extension, or on the error of
	# a query that began after the DROP committed (both end the process
	# normally); it must not crash the cluster.
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset);
	unlike($log, qr/terminated by signal|all server processes terminated/,
		"$label: no process crashed");
	note "$label: the worker stopped "
	  . ($log =~ /\[$pid\] LOG:  revenue_engine: extension dropped/ ? 'on its own check'
		: $log =~ /\[$pid\] ERROR:  (.*)/ ? "on an error: $1" : 'without a message');

	rx_mode(mode => 'ok');
	$t0 = Time::HiRes::time();
	setup_database($node, 'postgres', '/p3');
	ok(poll_for($node, 'postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$WORKER_BT' AND datname = 'postgres'",
			'1', 60),
		"$label: CREATE EXTENSION again starts a worker");
	ok(poll_for($node, 'postgres',
			"SELECT count(*) FROM revenue_engine.workers WHERE database_name = 'postgres'", '1', 30),
		"$label: revenue_engine.workers lists it");
	note "$label: a worker was back " . elapsed_since($t0) . ' s after CREATE EXTENSION began';
	enqueue($node, 'postgres', 33, 500);
	ok(wait_all_done($node, 'postgres', 60), "$label: the new worker delivers");
	check_delivered($node, 'postgres', 33, 500, '/p3', "$label (re-created)");
}

# ---------------------------------------------------------------------------
# Part 4: DROP DATABASE with a busy worker.
{
	my $label = 'DROP DATABASE';
	rx_reset();
	rx_mode(mode => 'stall', seconds => 5);
	$node->safe_psql('postgres', 'CREATE DATABASE db2');
	setup_database($node, 'db2', '/db2');
	enqueue($node, 'db2', 4, 2000);
	ok(poll_for($node, 'db2',
			"SELECT count(*) > 0 FROM revenue_engine.deliveries WHERE status = 'sending'", 't', 30),
		"$label: the worker of db2 is busy (deliveries in 'sending')");
	is(worker_count($node, 'db2'), '1', "$label: db2 has its worker");
	ok(rx_stats()->{requests} > 0, "$label: the receiver holds db2's requests");

	my $t0 = Time::HiRes::time();
	my ($ret, $out, $err, $timed_out);
	$ret = $node->psql('postgres', 'DROP DATABASE db2',
		stdout => \$out, stderr => \$err, timeout => 60, timed_out => \$timed_out);
	my $took = Time::HiRes::time() - $t0;
	ok(!$timed_out && $ret == 0, "$label: DROP DATABASE db2 succeeds")
	  or diag "ret $ret, stderr: $err";
	unlike($err, qr/being accessed by other users/, "$label: not refused as being accessed");
	cmp_ok($took, '<', 15, sprintf('%s: it took %.2f s (< 15 s)', $label, $took));
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_database WHERE datname = 'db2'"),
		'0', "$label: db2 is gone");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$WORKER_BT' AND datid IS NOT NULL
			    AND datid NOT IN (SELECT oid FROM pg_database)"),
		'0', "$label: no worker of db2 is left");
	rx_mode(mode => 'ok');
}

# ---------------------------------------------------------------------------
# Part 5: two databases, each with its own endpoint, events and worker.
{
	my $label = 'two databases';
	rx_reset();
	my %n = (dba => 3000, dbb => 2000);
	for my $db (sort keys %n)
	{
		$node->safe_psql('postgres', "CREATE DATABASE $db");
		setup_database($node, $db, "/$db");
	}
	enqueue($node, $_, 5, $n{$_}) for sort keys %n;
	for my $db (sort keys %n)
	{
		ok(wait_all_done($node, $db, 60), "$label: $db delivers everything");
	}
	for my $db (sort keys %n)
	{
		my ($dups) = check_delivered($node, $db, 5, $n{$db}, "/$db", "$label: $db");
		is($dups, 0, "$label: $db: no duplicates without a crash");
	}
	my $got = rx_received();
	is(join(',', sort keys %$got), '/dba,/dbb', "$label: the receiver got requests on /dba and /dbb only");
	is($node->safe_psql('dba',
			"SELECT string_agg(database_name || ':' || sent, ',' ORDER BY database_name)
			   FROM revenue_engine.workers WHERE database_name IN ('dba', 'dbb')"),
		'dba:3000,dbb:2000', "$label: revenue_engine.workers lists one worker each, with its own count");
	is( $node->safe_psql('dba',
			"SELECT count(DISTINCT w.pid) FROM revenue_engine.workers w
			   JOIN pg_stat_activity a ON a.pid = w.pid AND a.datname = w.database_name
			  WHERE a.backend_type = '$WORKER_BT' AND w.database_name IN ('dba', 'dbb')"),
		'2', "$label: two distinct live worker processes, each connected to its database");
	note "$label: workers: " . join('; ', split /\n/, $node->safe_psql('dba',
		'SELECT database_name, pid, state, requests, sent FROM revenue_engine.workers ORDER BY 1'));
}

note "duplicates: kill -9 $dups{1}, stop immediate $dups{2}";

$node->stop;
$rx->signal('TERM');
$rx->finish;
undef $rx;
done_testing();
