# The launcher and the delivery workers: who can stop them, how they come
# back, and whose rights they use.  Against the test receiver:
#
#  1. roles without rights (one with CREATEDB) run ALTER/DROP/CREATE
#     DATABASE forms that need the database idle (all fail) and the owner
#     runs CONNECTION LIMIT and SET: the worker keeps its pid and delivers at
#     once; a statement that passes the checks but fails afterwards gives
#     the worker back at once;
#  2. the owner's DROP DATABASE of another database with the extension (and
#     CREATE DATABASE ... TEMPLATE it) does not wait for its worker;
#  3. the launcher is terminated, then a worker: the worker is back within
#     seconds; again once the new launcher runs (it adopted the slots);
#  4. the worker connects as the extension's owner (pg_stat_activity), acts
#     as an owner that cannot log in, and falls back when the login fails;
#  5. functions the database owner plants in public (exact type matches of
#     unnest, cardinality ...) and a database-level search_path are never
#     used by the worker;
#  6. an application holding pg_advisory_lock(hashtext('revenue_engine
#     worker')) does not stop delivery;
#  7. PREPARE TRANSACTION + COMMIT PREPARED of an enqueue is delivered at once;
#  8. 64 databases without the extension do not keep the 65th from its
#     worker, after CREATE DATABASE and after a restart.
use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $WORKER_BT   = 'revenue_engine worker';
my $LAUNCHER_BT = 'revenue_engine launcher';

# ---------------------------------------------------------------------------
# The receiver (answers 200).
my $dir          = PostgreSQL::Test::Utils::tempdir;
my $rx_port_file = "$dir/rx.port";
my $rx           = IPC::Run::start(
	[
		'python3', ($ENV{TESTDIR} // '.') . '/test/receiver/receiver.py',
		'--port', '0', '--port-file', $rx_port_file, '--log', "$dir/rx.jsonl"
	],
	'<', \undef, '>', "$dir/rx.out", '2>', "$dir/rx.err");
for (1 .. 300)
{
	last if -s $rx_port_file;
	usleep(50_000);
}
my @background;    # long-lived psql sessions of the test
END
{
	local $?;
	$_->kill_kill for grep { $_->pumpable } @background;
	$rx->kill_kill if $rx && $rx->pumpable;
}
ok(-s $rx_port_file, 'the receiver is listening');
my $rx_port = PostgreSQL::Test::Utils::slurp_file($rx_port_file);
$rx_port =~ s/\s+//g;
my $rx_url = "http://127.0.0.1:$rx_port/hook";

# ---------------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('worker_lifecycle');
$node->init;
$node->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'revenue_engine'
revenue_engine.http_allow_private = on
max_worker_processes = 24
max_prepared_transactions = 5
timezone = 'UTC'
EOC
$node->start;
my $boot = $node->safe_psql('postgres', 'SELECT current_user');

sub q1
{
	my ($db, $sql, @user) = @_;
	return $node->safe_psql($db, $sql, @user ? (extra_params => [ '-U', $user[0] ]) : ());
}

# Run $sql as $user; returns (exit status, stderr).
sub try_as
{
	my ($db, $user, $sql) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql($db, $sql, stdout => \$out, stderr => \$err,
		extra_params => [ '-U', $user ]);
	return ($ret, $err);
}

# Poll until $query returns $expected (at most $seconds); elapsed seconds or undef.
sub wait_for
{
	my ($db, $query, $expected, $seconds) = @_;
	my $t0 = Time::HiRes::time();
	my ($out, $err) = ('', '');
	while (Time::HiRes::time() - $t0 < $seconds)
	{
		$node->psql($db, $query, stdout => \$out, stderr => \$err);
		return Time::HiRes::time() - $t0 if $out eq $expected;
		usleep(50_000);
	}
	diag "timed out after $seconds s: $query\nexpected: $expected\ngot: $out\nstderr: $err";
	return undef;
}

sub worker_pid
{
	my ($db) = @_;
	return q1('postgres',
		"SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity
		  WHERE backend_type = '$WORKER_BT' AND datname = '$db'");
}

sub launcher_pid
{
	return q1('postgres',
		"SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity
		  WHERE backend_type = '$LAUNCHER_BT'");
}

# Wait for one worker in $db that the workers view shows idle or busy; its pid.
sub wait_worker
{
	my ($db, $seconds, $not_pid) = @_;
	$not_pid //= 0;
	return undef unless defined wait_for($db,
		"SELECT count(*) FROM revenue_engine.workers
		  WHERE database_name = current_database() AND pid <> $not_pid
		    AND state IN ('idle', 'delivering', 'maintenance')", '1', $seconds);
	return q1($db, 'SELECT pid FROM revenue_engine.workers WHERE database_name = current_database()');
}

sub setup_database
{
	my ($db, $user) = @_;
	q1($db, 'CREATE EXTENSION revenue_engine', $user // $boot);
	q1($db, "SELECT revenue_engine.register_event_type('lifecycle')");
	q1($db, "SELECT revenue_engine.create_endpoint('sink', '$rx_url', "
		  . "retry_schedule => '{1 second,1 second,1 second}')");
}

my $nevent = 0;

sub enqueue_sql
{
	$nevent++;
	return "SELECT revenue_engine.enqueue_event(gen_random_uuid(), 'lifecycle', '{\"n\": $nevent}')";
}

# Enqueue one event in $db; seconds until it is sent, or undef.
sub deliver_one
{
	my ($db, $seconds) = @_;
	my $id = q1($db, enqueue_sql());
	return wait_for($db, "SELECT status FROM revenue_engine.webhook_events WHERE id = '$id'",
		'sent', $seconds // 10);
}

sub quick { my ($t, $max) = @_; return defined $t && $t < $max; }

q1('postgres', 'CREATE ROLE re_owner SUPERUSER LOGIN');
q1('postgres', 'CREATE ROLE dbowner LOGIN CREATEDB');
q1('postgres', 'CREATE ROLE stranger LOGIN');
q1('postgres', 'CREATE ROLE creator LOGIN CREATEDB');
q1('postgres', 'CREATE DATABASE app OWNER dbowner');
setup_database('app', 're_owner');
my $pid = wait_worker('app', 30);
ok($pid, "the worker of database app runs (pid $pid)");
ok(quick(deliver_one('app'), 3), 'it delivers');

# ===========================================================================
# 1. Statements that would need the database idle, by a role without rights.
{
	my $label = 'no rights';
	my @stmts = (
		'ALTER DATABASE app CONNECTION LIMIT 5',
		'DROP DATABASE app',
		'ALTER DATABASE app RENAME TO app2',
		'ALTER DATABASE app SET TABLESPACE pg_default',
		'CREATE DATABASE app_copy TEMPLATE app');
	for my $round (1 .. 3)
	{
		for my $sql (@stmts)
		{
			my ($ret, $err) = try_as('postgres', 'stranger', $sql);
			isnt($ret, 0, "$label: stranger: $sql fails (round $round)")
			  if $round == 1;
			like($err, qr/must be owner|permission denied/, "$label: $sql: refused for lack of rights")
			  if $round == 1;
		}
	}
	# CREATEDB is not enough to copy or drop a database one does not own
	for my $sql ('CREATE DATABASE app_copy TEMPLATE app', 'DROP DATABASE app',
		'ALTER DATABASE app RENAME TO app2')
	{
		my ($ret, $err) = try_as('postgres', 'creator', $sql);
		like($err, qr/must be owner|permission denied/, "$label: creator (CREATEDB): $sql: refused");
	}
	is(worker_pid('app'), $pid, "$label: the worker kept its pid after 18 refused statements");
	ok(quick(deliver_one('app'), 2), "$label: and delivers an event right after");

	# the owner's statements that do not need the database idle
	for my $sql ('ALTER DATABASE app CONNECTION LIMIT 50', q{ALTER DATABASE app SET work_mem = '8MB'},
		'ALTER DATABASE app RESET work_mem', 'ALTER DATABASE app CONNECTION LIMIT -1')
	{
		my ($ret, $err) = try_as('postgres', 'dbowner', $sql);
		is($ret, 0, "$label: the owner's $sql succeeds") or diag $err;
	}
	# the owner's rename to a name that exists fails its own checks first
	my ($ret) = try_as('postgres', 'dbowner', 'ALTER DATABASE app RENAME TO postgres');
	isnt($ret, 0, "$label: the owner's rename to an existing name fails");
	is(worker_pid('app'), $pid, "$label: the worker kept its pid through the owner's statements");
	ok(quick(deliver_one('app'), 2), "$label: and delivers");

	# passes the permission checks, fails afterwards (another session is in app)
	my $sleeper = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('app'), '-c', 'SELECT pg_sleep(60)' ],
		'<', \undef, '>', "$dir/sleeper.out", '2>', "$dir/sleeper.err");
	push @background, $sleeper;
	wait_for('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND query LIKE '%pg_sleep(60)%'
		    AND pid <> pg_backend_pid()", '1', 10);
	my $err;
	($ret, $err) = try_as('postgres', 'dbowner', 'CREATE DATABASE app_copy TEMPLATE app');
	like($err, qr/being accessed by other users/,
		"$label: the owner's CREATE DATABASE ... TEMPLATE app fails on the other session");
	like($err, qr/There is 1 other session/, "$label: the worker had been stopped first (1 other session: the sleeper)");
	my $t = wait_for('app',
		"SELECT count(*) FROM revenue_engine.workers WHERE database_name = 'app'
		    AND state IN ('idle', 'delivering', 'maintenance')", '1', 10);
	ok(quick($t, 4), sprintf("$label: the worker is back %.1f s after the failed statement",
		$t // -1));
	my $back = worker_pid('app');
	isnt($back, $pid, "$label: it is a new worker (pid $back)");
	$pid = $back;
	ok(quick(deliver_one('app'), 2), "$label: and delivers");
	$sleeper->kill_kill;
}

# ===========================================================================
# 2. The owner's DROP DATABASE and CREATE DATABASE ... TEMPLATE do not wait.
{
	my $label = 'owner DDL';
	q1('postgres', 'CREATE DATABASE other OWNER dbowner');
	setup_database('other', 're_owner');
	ok(wait_worker('other', 30), "$label: database other has its worker");

	my $t0 = Time::HiRes::time();
	my ($ret, $err) = try_as('postgres', 'dbowner', 'CREATE DATABASE other_copy TEMPLATE other');
	my $took = Time::HiRes::time() - $t0;
	is($ret, 0, "$label: CREATE DATABASE other_copy TEMPLATE other succeeds") or diag $err;
	cmp_ok($took, '<', 4.5, sprintf("$label: without waiting (%.2f s)", $took));
	ok(wait_worker('other', 10), "$label: other has its worker back");
	ok(wait_worker('other_copy', 20), "$label: the copy, which has the extension, gets one");
	ok(quick(deliver_one('other_copy'), 3), "$label: the copy's worker delivers");

	for my $db ('other', 'other_copy')
	{
		$t0 = Time::HiRes::time();
		($ret, $err) = try_as('postgres', 'dbowner', "DROP DATABASE $db");
		$took = Time::HiRes::time() - $t0;
		is($ret, 0, "$label: DROP DATABASE $db succeeds") or diag $err;
		cmp_ok($took, '<', 4.5, sprintf("$label: without waiting (%.2f s)", $took));
	}
	is(q1('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$WORKER_BT'
	                     AND datname NOT IN (SELECT datname FROM pg_database)"),
		'0', "$label: no worker of a dropped database is left");
	is(worker_pid('app'), $pid, "$label: app's worker was not touched");
}

# ===========================================================================
# 3. The launcher, then a worker, terminated.
{
	my $label = 'launcher restart';
	my $lpid = launcher_pid();
	like($lpid, qr/^\d+$/, "$label: one launcher runs (pid $lpid)");
	q1('postgres', "SELECT pg_terminate_backend($lpid)");
	wait_for('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $lpid", '0', 10);
	my $t0 = Time::HiRes::time();
	q1('postgres', "SELECT pg_terminate_backend($pid)");
	my $new = wait_worker('app', 30, $pid);
	my $took = Time::HiRes::time() - $t0;
	ok($new, sprintf("$label: the worker terminated while no launcher ran is back after %.1f s", $took));
	cmp_ok($took, '<', 12, "$label: within seconds (the postmaster restarts the launcher after 5 s)");
	my $lpid2 = launcher_pid();
	isnt($lpid2, $lpid, "$label: a new launcher runs (pid $lpid2)");
	ok(quick(deliver_one('app'), 2), "$label: the worker delivers");

	# a worker the new launcher adopted (it started before the launcher)
	q1('postgres', "SELECT pg_terminate_backend($lpid2)");
	wait_for('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$LAUNCHER_BT'
	                        AND pid <> $lpid2", '1', 20);
	$pid = $new;
	$t0 = Time::HiRes::time();
	q1('postgres', "SELECT pg_terminate_backend($pid)");
	$new = wait_worker('app', 30, $pid);
	$took = Time::HiRes::time() - $t0;
	ok($new, sprintf("$label: a worker the new launcher did not start is back after %.1f s", $took));
	cmp_ok($took, '<', 5, "$label: within seconds");
	ok(quick(deliver_one('app'), 2), "$label: and delivers");
	$pid = $new;
	unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile),
		qr/more than \d+ databases|could not start a delivery worker/,
		"$label: no slot shortage was reported");
}

# ===========================================================================
# 4. Whose rights: the owner's.
{
	my $label = 'owner';
	is(q1('postgres', "SELECT usename FROM pg_stat_activity WHERE pid = $pid"), 're_owner',
		"$label: the worker of app is connected as the extension's owner");

	# an owner that cannot log in: connected as the bootstrap superuser, acting as it
	q1('postgres', 'CREATE ROLE re_nologin SUPERUSER NOLOGIN');
	q1('postgres', 'CREATE DATABASE nologin_db');
	q1('nologin_db', 'SET ROLE re_nologin; CREATE EXTENSION revenue_engine');
	for my $db ('app', 'nologin_db')
	{
		q1($db, q{
			CREATE TABLE public.who_ran (current_name name, session_name name, escalated text);
			CREATE FUNCTION public.who_ran() RETURNS trigger LANGUAGE plpgsql AS $$
			DECLARE
				esc text := 'refused';
			BEGIN
				BEGIN
					SET SESSION AUTHORIZATION DEFAULT;
					esc := 'escalated to ' || current_user;
				EXCEPTION WHEN others THEN
					NULL;
				END;
				INSERT INTO public.who_ran VALUES (current_user, session_user, esc);
				RETURN NULL;
			END $$;
			CREATE TRIGGER who_ran AFTER INSERT ON revenue_engine.delivery_attempts
			    FOR EACH STATEMENT EXECUTE FUNCTION public.who_ran();});
	}
	q1('nologin_db', "SELECT revenue_engine.register_event_type('lifecycle')");
	q1('nologin_db', "SELECT revenue_engine.create_endpoint('sink', '$rx_url')");
	my $npid = wait_worker('nologin_db', 30);
	ok($npid, "$label: nologin_db has a worker");
	is(q1('postgres', "SELECT usename FROM pg_stat_activity WHERE pid = $npid"), $boot,
		"$label: an owner that cannot log in: connected as the bootstrap superuser");
	ok(quick(deliver_one('nologin_db'), 3), "$label: it delivers");
	is(q1('nologin_db', 'SELECT DISTINCT current_name || \'/\' || session_name || \'/\' || escalated FROM public.who_ran'),
		"re_nologin/$boot/refused",
		"$label: its statements run as the owner, which cannot SET SESSION AUTHORIZATION back");
	ok(quick(deliver_one('app'), 3), "$label: app delivers");
	is(q1('app', 'SELECT DISTINCT current_name || \'/\' || session_name FROM public.who_ran'),
		're_owner/re_owner', "$label: app's worker runs as re_owner, its session user");

	# the owner loses LOGIN: the worker falls back to acting as it
	q1('postgres', 'ALTER ROLE re_owner NOLOGIN');
	q1('postgres', "SELECT pg_terminate_backend($pid)");
	my $new = wait_worker('app', 20, $pid);
	ok($new, "$label: after ALTER ROLE re_owner NOLOGIN the worker is back");
	is(q1('postgres', "SELECT usename FROM pg_stat_activity WHERE pid = $new"), $boot,
		"$label: connected as the bootstrap superuser");
	q1('app', 'TRUNCATE public.who_ran');
	ok(quick(deliver_one('app'), 3), "$label: it delivers");
	is(q1('app', 'SELECT DISTINCT current_name FROM public.who_ran'), 're_owner',
		"$label: as re_owner");
	q1('postgres', 'ALTER ROLE re_owner LOGIN');
	$pid = $new;
	q1($_, 'DROP TRIGGER who_ran ON revenue_engine.delivery_attempts') for ('app', 'nologin_db');
}

# ===========================================================================
# 5. What the database owner plants in public is never run by the worker.
{
	my $label = 'planted';
	q1('app', q{
		CREATE TABLE public.planted_calls (fn text, by_role name);
		GRANT INSERT ON public.planted_calls TO PUBLIC;
		DO $do$
		DECLARE
			t text;
		BEGIN
			FOREACH t IN ARRAY ARRAY['interval', 'text', 'bigint', 'integer', 'uuid', 'boolean',
			                         'jsonb', 'timestamptz', 'smallint', 'double precision']
			LOOP
				EXECUTE format($f$
					CREATE FUNCTION public.unnest(%1$s[]) RETURNS SETOF %1$s LANGUAGE plpgsql AS $b$
					BEGIN
						INSERT INTO public.planted_calls VALUES ('unnest(%1$s[])', current_user);
						RETURN QUERY SELECT * FROM pg_catalog.unnest($1);
					END $b$;
					CREATE FUNCTION public.cardinality(%1$s[]) RETURNS integer LANGUAGE plpgsql AS $b$
					BEGIN
						INSERT INTO public.planted_calls VALUES ('cardinality(%1$s[])', current_user);
						RETURN pg_catalog.cardinality($1);
					END $b$;
					CREATE FUNCTION public.array_length(%1$s[], integer) RETURNS integer LANGUAGE plpgsql AS $b$
					BEGIN
						INSERT INTO public.planted_calls VALUES ('array_length(%1$s[])', current_user);
						RETURN pg_catalog.array_length($1, $2);
					END $b$;$f$, t);
			END LOOP;
		END $do$;}, 'dbowner');
	q1('app', 'ALTER DATABASE app SET search_path = public, pg_catalog', 'dbowner');
	# the plant works on a session with the default search_path
	q1('app', q{SELECT count(*) FROM unnest('{1 second}'::interval[])}, 'dbowner');
	is(q1('app', 'SELECT count(*) FROM public.planted_calls'), '1',
		"$label: an ordinary session calls the planted public.unnest(interval[])");
	q1('app', 'TRUNCATE public.planted_calls');

	# a fresh worker (fresh plans), an endpoint that retries, deliveries
	q1('postgres', "SELECT pg_terminate_backend($pid)");
	$pid = wait_worker('app', 20, $pid);
	ok($pid, "$label: a new worker started after the plant");
	q1('app', "SELECT revenue_engine.register_event_type('flaky')");
	q1('app', "SELECT revenue_engine.create_endpoint('flaky', 'http://127.0.0.1:1/refused', "
		  . "event_types => '{flaky}', retry_schedule => '{1 second,1 second}')");
	my $id = q1('app', "SELECT revenue_engine.enqueue_event(gen_random_uuid(), 'flaky', '{}')");
	ok(defined wait_for('app', "SELECT count(*) FROM revenue_engine.deliveries d
	                             JOIN revenue_engine.endpoints e USING (tenant_id)
	                            WHERE d.endpoint_id = e.id AND e.name = 'flaky'
	                              AND d.event_id = '$id' AND d.status = 'dead'", '1', 20),
		"$label: a delivery to a refusing endpoint went through its retries to dead");
	ok(quick(deliver_one('app'), 3), "$label: and the sink got its events");
	is(q1('app', q{SELECT coalesce(string_agg(DISTINCT fn || ' as ' || by_role, ', '), 'none')
	                 FROM public.planted_calls}),
		'none', "$label: no planted function was called by the worker");
	q1('app', 'ALTER DATABASE app RESET search_path', 'dbowner');
}

# ===========================================================================
# 6. An application's advisory lock with the old worker's key.
{
	my $label = 'advisory lock';
	my $holder = IPC::Run::start(
		[
			'psql', '-X', '-d', $node->connstr('app'), '-U', 'stranger',
			'-c', q{SELECT pg_advisory_lock(hashtext('revenue_engine worker'))},
			'-c', 'SELECT pg_sleep(120)'
		],
		'<', \undef, '>', "$dir/holder.out", '2>', "$dir/holder.err");
	push @background, $holder;
	ok(defined wait_for('app', q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
	                               AND pid <> pg_backend_pid()}, '1', 10),
		"$label: the application holds the lock");
	q1('postgres', "SELECT pg_terminate_backend($pid)");
	my $new = wait_worker('app', 20, $pid);
	ok($new, "$label: a new worker started while the application holds it");
	ok(quick(deliver_one('app'), 3), "$label: and delivers");
	$pid = $new;
	$holder->kill_kill;
}

# ===========================================================================
# 7. COMMIT PREPARED wakes the worker.
{
	my $label = 'two-phase';
	for my $n (1 .. 3)
	{
		wait_for('app', q{SELECT count(*) FROM revenue_engine.deliveries d JOIN revenue_engine.endpoints e
		                    ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
		                   WHERE e.name = 'sink' AND d.status <> 'sent'}, '0', 10);
		usleep(300_000);    # the worker is idle, waiting up to 10 s
		my $id = q1('app', "BEGIN; " . enqueue_sql() . "; PREPARE TRANSACTION 'p$n';");
		usleep(500_000);
		is(q1('app', "SELECT count(*) FROM revenue_engine.webhook_events WHERE id = '$id'"), '0',
			"$label $n: not visible while prepared");
		q1('app', "COMMIT PREPARED 'p$n'");
		my $t = wait_for('app', "SELECT status FROM revenue_engine.webhook_events WHERE id = '$id'",
			'sent', 15);
		ok(quick($t, 1.5), sprintf("$label $n: delivered %.2f s after COMMIT PREPARED", $t // -1));
	}
}

# ===========================================================================
# 8. 64 databases without the extension, then a 65th with it.
{
	my $label = '65th database';
	my $t0 = Time::HiRes::time();
	q1('postgres', join('', map { "CREATE DATABASE noext_$_ STRATEGY file_copy;\n" } 1 .. 64));
	note sprintf("$label: 64 databases created in %.1f s", Time::HiRes::time() - $t0);
	q1('postgres', 'CREATE DATABASE db65');
	setup_database('db65');
	ok(wait_worker('db65', 30), "$label: db65 has its worker");
	ok(quick(deliver_one('db65'), 3), "$label: it delivers");

	$node->restart;
	$t0 = Time::HiRes::time();
	ok(wait_worker('db65', 60), "$label: after a restart, with every database looked at again, db65 has its worker");
	note sprintf("$label: %.1f s after the restart", Time::HiRes::time() - $t0);
	ok(wait_worker('app', 30), "$label: and app");
	ok(quick(deliver_one('db65'), 3), "$label: db65 delivers");
	ok(defined wait_for('postgres',
			"SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity
			  WHERE backend_type = '$WORKER_BT'", 'app,db65,nologin_db', 30),
		"$label: three workers run (app, nologin_db, db65), none for the 64 others");
	unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile),
		qr/more than \d+ databases|could not start a delivery worker/,
		"$label: no slot or worker shortage was reported");
}

my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
unlike($log, qr/terminated by signal|PANIC/, 'no server process crashed');
$node->stop;
done_testing();
