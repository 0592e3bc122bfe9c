# The delivery worker stops cleanly and survives errors in its units of work:
#  1. `pg_ctl -m fast restart` in the middle of a 3,000-event backlog to a
#     receiver that answers in 20 ms: every event is delivered exactly once
#     (the worker lets its requests finish and records every outcome before
#     it exits, so nothing is reclaimed and sent again);
#  2. a trigger on sends that raises for one row: the worker keeps its pid,
#     every other send is recorded as sent, the bad row carries the error and
#     is not sent again;
#  3. an idle worker's CPU over 30 s (utime + stime from /proc/<pid>/stat);
#  4. its CPU while 50 requests wait 8 s for their answers;
#  5. a reloaded revenue_engine.worker_max_in_flight limits the requests.
use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $NEVENTS   = 3000;
my $WORKER_BT = 'revenue_engine worker';
my $IDLE_SECS = 30;
my $IDLE_MAX  = 0.3;    # CPU seconds over $IDLE_SECS

# ---------------------------------------------------------------------------
# The receiver (test/receiver/receiver.py).
my $dir          = PostgreSQL::Test::Utils::tempdir;
my $rx_port_file = "$dir/rx.port";
my $rx_log       = "$dir/rx.jsonl";
my $rx           = IPC::Run::start(
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
END
{
	local $?;
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

sub rx_stats
{
	my $r = $http->get("$rx_base/_control/stats");
	die "receiver stats: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

# path => { webhook_id or payload "to" => times received }
sub rx_received
{
	my %by_path;
	for my $line (split /\n/, PostgreSQL::Test::Utils::slurp_file($rx_log))
	{
		next unless length $line;
		my $r   = decode_json($line);
		my $key = $r->{webhook_id};
		$key //= eval { decode_json($r->{body})->{to} } // '(none)';
		$by_path{ $r->{path} }{$key}++;
	}
	return \%by_path;
}

sub poll_for
{
	my ($node, $query, $expected, $seconds) = @_;
	my $deadline = Time::HiRes::time() + $seconds;
	my ($out, $err) = ('', '');
	while (Time::HiRes::time() < $deadline)
	{
		$node->psql('postgres', $query, stdout => \$out, stderr => \$err);
		return 1 if $out eq $expected && $err eq '';
		usleep(100_000);
	}
	diag "poll timed out after $seconds s: $query\nexpected: $expected\ngot: $out\nstderr: $err";
	return 0;
}

sub worker_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = '$WORKER_BT' AND datname = 'postgres'");
}

# utime + stime of a process, in seconds
sub cpu_seconds
{
	my ($pid) = @_;
	my $stat = PostgreSQL::Test::Utils::slurp_file("/proc/$pid/stat");
	$stat =~ s/^.*\)\s+//s;    # the command may hold spaces
	my @f = split /\s+/, $stat;
	return ($f[11] + $f[12]) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

# ---------------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('worker_stop');
$node->init;
$node->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'revenue_engine'
revenue_engine.http_allow_private = on
max_worker_processes = 16
timezone = 'UTC'
EOC
$node->start;
$node->safe_psql('postgres', <<"SQL");
CREATE EXTENSION revenue_engine;
SELECT revenue_engine.register_event_type('stop_event');
SELECT revenue_engine.create_endpoint('sink', '$rx_base/hook',
       retry_schedule => '{1 second,1 second,1 second}');
SQL
ok(poll_for($node, "SELECT count(*) FROM revenue_engine.workers WHERE database_name = 'postgres'",
		'1', 30),
	'the worker of database postgres runs');

# ---------------------------------------------------------------------------
# Part 1: a fast restart in the middle of a backlog.
{
	my $label = 'fast restart';
	rx_post('reset', {});
	rx_post('mode', { mode => 'stall', seconds => 0.02 });
	$node->safe_psql('postgres',
		"SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 'stop_event', "
		  . "jsonb_build_object('n', g))) FROM generate_series(1, $NEVENTS) g");
	my $t0   = Time::HiRes::time();
	my $seen = 0;
	while (Time::HiRes::time() - $t0 < 60)
	{
		$seen = rx_stats()->{requests};
		last if $seen >= 300;
		usleep(10_000);
	}
	my $sent_before = $node->safe_psql('postgres',
		"SELECT count(*) FROM revenue_engine.deliveries WHERE status = 'sent'");
	ok($seen >= 300 && $sent_before < $NEVENTS,
		"$label: mid-backlog ($seen requests received, $sent_before of $NEVENTS recorded)");
	my $old_pid = worker_pid($node);
	my $offset  = -s $node->logfile;

	my $t_stop = Time::HiRes::time();
	PostgreSQL::Test::Utils::system_or_bail('pg_ctl', '-w', '-D', $node->data_dir,
		'-l', $node->logfile, '-m', 'fast', 'restart');
	$node->_update_pid(1);
	note sprintf('%s: pg_ctl restart took %.2f s', $label, Time::HiRes::time() - $t_stop);

	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
	like($log, qr/\[$old_pid\] LOG:  revenue_engine: delivery worker stopping/,
		"$label: the worker logged its clean stop");
	unlike($log, qr/terminated by signal|stop deadline reached/,
		"$label: no crash, no request given up at the deadline");

	ok(poll_for($node,
			"SELECT count(*) FROM revenue_engine.deliveries WHERE status IN ('pending', 'sending')",
			'0', 120),
		"$label: every delivery done after the restart");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FILTER (WHERE status = 'sent') || '/' || count(*)
			   FROM revenue_engine.webhook_events WHERE event_data ? 'n'"),
		"$NEVENTS/$NEVENTS", "$label: all $NEVENTS events are 'sent'");
	is( $node->safe_psql('postgres',
			'SELECT count(*) FROM revenue_engine.deliveries WHERE attempts <> 1'),
		'0', "$label: every delivery took one attempt (none reclaimed)");

	my %db_ids = map { $_ => 1 } split /\n/,
	  $node->safe_psql('postgres',
		"SELECT id FROM revenue_engine.webhook_events WHERE event_data ? 'n'");
	my $got  = rx_received()->{'/hook'} // {};
	my @lost = grep { !$got->{$_} } keys %db_ids;
	my @dup  = grep { $got->{$_} > 1 } keys %$got;
	is(scalar(@lost), 0, "$label: every event id was received");
	is(scalar(@dup),  0, "$label: no event id was received twice")
	  or diag 'duplicated, e.g.: ' . join(', ', @dup[ 0 .. ($#dup < 4 ? $#dup : 4) ]);
	is(rx_stats()->{duplicates}, 0, "$label: the receiver counts no duplicate webhook-id");
	is(rx_stats()->{requests}, $NEVENTS, "$label: the receiver got exactly $NEVENTS requests");
}

# ---------------------------------------------------------------------------
# Part 2: a trigger on sends that raises for one row.
{
	my $label = 'raising trigger';
	rx_post('reset', {});
	my $pid = worker_pid($node);
	ok($pid, "$label: the worker runs (pid $pid)");
	$node->safe_psql('postgres', <<"SQL");
SELECT revenue_engine.create_channel('wa', '$rx_base/wa', max_in_flight => 32,
       retry_schedule => '{1 second,1 second}');
CREATE FUNCTION public.refuse_bad_send() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    IF NEW.status = 'sent' AND NEW.payload ->> 'to' = 'bad' THEN
        RAISE EXCEPTION 'the application refuses send %', NEW.id;
    END IF;
    RETURN NEW;
END
\$\$;
CREATE TRIGGER refuse_bad_send BEFORE UPDATE ON revenue_engine.sends
    FOR EACH ROW EXECUTE FUNCTION public.refuse_bad_send();
-- one transaction: the bad row is claimed and recorded with the others
SELECT count(revenue_engine.enqueue_send('wa',
           jsonb_build_object('to', CASE WHEN g = 100 THEN 'bad' ELSE 'n' || g END)))
  FROM generate_series(1, 200) g;
SQL
	ok(poll_for($node,
			"SELECT count(*) FROM revenue_engine.sends WHERE status IN ('queued', 'sending')",
			'0', 60),
		"$label: no send left queued or sending");
	is(worker_pid($node), $pid, "$label: the worker kept its pid");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM revenue_engine.sends WHERE status = 'sent' AND payload ->> 'to' <> 'bad'"),
		'199', "$label: the 199 other sends are recorded as sent");
	my ($status, $error) = split /\|/, $node->safe_psql('postgres',
		"SELECT status, last_error FROM revenue_engine.sends WHERE payload ->> 'to' = 'bad'");
	is($status, 'failed', "$label: the bad row is failed (delivered, not to be sent again)");
	like($error, qr/could not record the outcome \(HTTP 200\): the application refuses send \d+/,
		"$label: the bad row carries the error");
	like( $node->safe_psql('postgres',
			"SELECT outcome || ' ' || status_code || ' ' || error FROM revenue_engine.delivery_attempts
			  WHERE send_id = (SELECT id FROM revenue_engine.sends WHERE payload ->> 'to' = 'bad')"),
		qr/^dead 200 could not record the outcome/,
		"$label: its attempt is logged with the error");
	sleep 2;    # a retry of the bad row would come after 1 s
	my $got = rx_received()->{'/wa'} // {};
	is(scalar(keys %$got), 200, "$label: the receiver got 200 distinct sends");
	is(scalar(grep { $_ > 1 } values %$got), 0, "$label: none of them twice");
	like(PostgreSQL::Test::Utils::slurp_file($node->logfile),
		qr/ERROR:  the application refuses send \d+\n.*CONTEXT: .*\n(?:\t.*\n)*\trevenue_engine worker: recording a batch of outcomes\n/,
		"$label: the error is logged with the worker's context");
	$node->safe_psql('postgres', 'DROP TRIGGER refuse_bad_send ON revenue_engine.sends');
}

# ---------------------------------------------------------------------------
# Part 3: an idle worker uses (almost) no CPU.
{
	my $label = 'idle';
	my $pid   = worker_pid($node);
	sleep 3;    # outcomes recorded, connections settled
	my $c0 = cpu_seconds($pid);
	sleep $IDLE_SECS;
	my $used = cpu_seconds($pid) - $c0;
	is(worker_pid($node), $pid, "$label: the same worker ran all along");
	cmp_ok($used, '<', $IDLE_MAX,
		sprintf('%s: the worker used %.2f s of CPU in %d s (< %.1f s)', $label, $used, $IDLE_SECS,
			$IDLE_MAX));
	diag sprintf('%s: worker CPU %.3f s over %d s', $label, $used, $IDLE_SECS);
}

# ---------------------------------------------------------------------------
# Part 4: a worker waiting for slow answers sleeps too (no polling).
{
	my $label = 'waiting';
	my $pid   = worker_pid($node);
	rx_post('reset', {});
	rx_post('mode', { mode => 'stall', seconds => 8 });    # within the 10 s timeout
	$node->safe_psql('postgres',
		"SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 'stop_event', "
		  . "jsonb_build_object('slow', g))) FROM generate_series(1, 50) g");
	ok(poll_for($node, "SELECT count(*) FROM revenue_engine.deliveries WHERE status = 'sending'",
			'50', 30),
		"$label: 50 deliveries claimed");
	my $t0 = Time::HiRes::time();
	usleep(50_000) while rx_stats()->{requests} < 50 && Time::HiRes::time() - $t0 < 10;
	is(rx_stats()->{requests}, 50, "$label: the receiver holds the 50 requests");
	my $c0 = cpu_seconds($pid);
	sleep 5;
	my $used = cpu_seconds($pid) - $c0;
	cmp_ok($used, '<', 0.1,
		sprintf('%s: with 50 requests in flight for 5 s the worker used %.2f s of CPU (< 0.1 s)',
			$label, $used));
	diag sprintf('%s: worker CPU %.3f s over 5 s with 50 requests in flight', $label, $used);
	ok(poll_for($node,
			"SELECT count(*) FROM revenue_engine.deliveries WHERE status IN ('pending', 'sending')",
			'0', 60),
		"$label: the slow answers are recorded");
}

# ---------------------------------------------------------------------------
# Part 5: a reloaded revenue_engine.worker_max_in_flight takes effect.
{
	my $label = 'max in flight';
	my $pid   = worker_pid($node);
	$node->safe_psql('postgres',
		'ALTER SYSTEM SET revenue_engine.worker_max_in_flight = 4; SELECT pg_reload_conf()');
	sleep 1;
	rx_post('reset', {});
	rx_post('mode', { mode => 'stall', seconds => 3 });
	$node->safe_psql('postgres',
		"SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 'stop_event', "
		  . "jsonb_build_object('limited', g))) FROM generate_series(1, 20) g");
	sleep 2;
	is(rx_stats()->{requests}, 4, "$label: 4 requests on the network at once after the reload");
	$node->safe_psql('postgres',
		'ALTER SYSTEM RESET revenue_engine.worker_max_in_flight; SELECT pg_reload_conf()');
	rx_post('mode', { mode => 'ok' });
	ok(poll_for($node,
			"SELECT count(*) FROM revenue_engine.deliveries WHERE status IN ('pending', 'sending')",
			'0', 60),
		"$label: all delivered after the limit is lifted");
	is(worker_pid($node), $pid, "$label: the same worker all along");
}

$node->stop;
$rx->signal('TERM');
$rx->finish;
undef $rx;
done_testing();
