# The circuit breaker disables an endpoint that keeps failing, it can be
# re-enabled; schedule_maintenance() adds a pg_cron job when pg_cron is there.
use strict;
use warnings;
use IPC::Run;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = $ENV{TESTDIR} // '.';
my $tmp  = PostgreSQL::Test::Utils::tempdir;

# pg_cron is packaged by Debian 12 for PostgreSQL 15 only (postgresql-15-cron):
# where the PostgreSQL under test lacks it, its part is skipped.
my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
my $have_cron = -f "$sharedir/extension/pg_cron.control";
my $preload = $have_cron ? 'revenue_engine,pg_cron' : 'revenue_engine';

# A receiver that answers 500 to everything.
my $rx = IPC::Run::start(
	[ 'python3', "$root/test/receiver/receiver.py", '--port', '0',
	  '--port-file', "$tmp/port", '--log', "$tmp/log.jsonl" ],
	'<', \undef, '>', "$tmp/rx.out", '2>', "$tmp/rx.err");
END { eval { $rx->kill_kill(grace => 5) } if $rx; }
for (1 .. 1200) { last if -s "$tmp/port"; usleep(50_000); }
chomp(my $port = slurp_file("$tmp/port"));
my $http = HTTP::Tiny->new(proxy => undef, http_proxy => undef, no_proxy => ['127.0.0.1']);
my $res = $http->request('POST', "http://127.0.0.1:$port/_control/mode",
	{ content => encode_json({ mode => 'status', status => 500 }),
	  headers => { 'content-type' => 'application/json' } });
ok($res->{success}, 'receiver answers 500');

my $node = PostgreSQL::Test::Cluster->new('circuit');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = '$preload'
cron.database_name = 'postgres'
revenue_engine.http_allow_private = on
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION revenue_engine;
SELECT revenue_engine.register_event_type('ping');
});
$node->safe_psql('postgres', qq{
SELECT revenue_engine.create_endpoint('flaky', 'http://127.0.0.1:$port/hook',
         retry_schedule => array_fill('1 second'::interval, ARRAY[28]),
         circuit_break_after => '2 seconds');
SELECT revenue_engine.enqueue_event(gen_random_uuid(), 'ping', '{}');
});

# Failing continuously for longer than circuit_break_after: disabled by the
# worker's maintenance (every 10 s), with the reason.
ok($node->poll_query_until('postgres',
		q{SELECT NOT enabled FROM revenue_engine.endpoints WHERE name = 'flaky'}),
	'the circuit breaker disabled the failing endpoint');
like($node->safe_psql('postgres',
		q{SELECT disabled_reason FROM revenue_engine.endpoints WHERE name = 'flaky'}),
	qr/circuit breaker: failing since/, 'the reason names the circuit breaker');
my $attempts = $node->safe_psql('postgres',
	q{SELECT attempts FROM revenue_engine.deliveries});
sleep 3;
is($node->safe_psql('postgres', q{SELECT attempts FROM revenue_engine.deliveries}),
	$attempts, 'a disabled endpoint gets no more attempts');
is($node->safe_psql('postgres', q{SELECT status FROM revenue_engine.deliveries}),
	'pending', 'its delivery waits, still pending');

# Re-enabled once the receiver is fixed: the waiting delivery goes out.
$http->request('POST', "http://127.0.0.1:$port/_control/mode",
	{ content => encode_json({ mode => 'ok' }), headers => { 'content-type' => 'application/json' } });
$node->safe_psql('postgres', q{SELECT revenue_engine.set_endpoint_enabled('flaky', true)});
ok($node->poll_query_until('postgres',
		q{SELECT status = 'sent' FROM revenue_engine.webhook_events}),
	're-enabled: the event is delivered');
is($node->safe_psql('postgres',
		q{SELECT failing_since IS NULL AND enabled FROM revenue_engine.endpoints}),
	't', 'a success clears failing_since');

# pg_cron: maintenance scheduled in this database.
SKIP:
{
	skip "pg_cron is not installed in this PostgreSQL ($sharedir)", 2 unless $have_cron;
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
	like($node->safe_psql('postgres', 'SELECT revenue_engine.schedule_maintenance()'),
		qr/scheduled pg_cron job \d+/, 'schedule_maintenance adds a pg_cron job');
	is($node->safe_psql('postgres',
			q{SELECT command || ' @ ' || database FROM cron.job WHERE jobname LIKE 'revenue_engine_maintenance%'}),
		'SELECT revenue_engine.purge_attempts() @ postgres', 'the job purges the attempt log in this database');
}

# purge_attempts honours the retention.
is($node->safe_psql('postgres', q{SELECT revenue_engine.purge_attempts('0 seconds') > 0}),
	't', 'purge_attempts removes attempts older than the retention');

$node->stop;
done_testing();
