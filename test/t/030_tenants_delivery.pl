# Delivery through the worker across tenants (src/tenancy): two tenants with
# an endpoint and a channel of the same names, each pointing at its own
# receiver that checks its own tenant's signing secret.
#
#  1. the worker sees every tenant's rows (row level security is forced on
#     the tables) and delivers each tenant's events and sends to that
#     tenant's receiver, signed with that tenant's secret;
#  2. the attack of issue 10: the application role of tenant beta sets
#     revenue_engine.tenant to acme and enqueues an event.  A role bound to
#     beta is refused (42501) and nothing reaches acme's receiver; an unbound
#     role shared by tenants acts for the tenant it sets (documented);
#  3. an extension whose owner is not a superuser (created by a superuser
#     later demoted), so that forced row level security applies to the owner:
#     the functions (C paths in the owner scope, SECURITY DEFINER functions)
#     still work for a bound role, the owner's own queries see only the
#     tenant it sets, and the worker still delivers every tenant's events.
use strict;
use warnings;

use IPC::Run;
use HTTP::Tiny;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root      = $ENV{TESTDIR} // '.';
require "$root/test/lib/Receiver.pm";
my $rx_script = "$root/test/receiver/receiver.py";
my $tmp       = PostgreSQL::Test::Utils::tempdir;
my %SECRET    = (
	acme => 'whsec_' . encode_base64(join('', map { chr(($_ * 37 + 11) % 256) } 1 .. 24), ''),
	beta => 'whsec_' . encode_base64(join('', map { chr(($_ * 53 + 7) % 256) } 1 .. 24), ''));
my $http = Receiver::http();

# ---------------------------------------------------------------------------
# One receiver per tenant, each checking its tenant's secret.

my %rx;
for my $t (sort keys %SECRET)
{
	my $r = { port_file => "$tmp/rx_$t.port", log => "$tmp/rx_$t.jsonl" };
	$r->{h} = IPC::Run::start(
		[
			'python3', $rx_script, '--port', '0', '--port-file', $r->{port_file},
			'--log', $r->{log}, '--secret', $SECRET{$t}
		],
		'<', \undef, '>', "$tmp/rx_$t.out", '2>', "$tmp/rx_$t.err");
	$rx{$t} = $r;
}
for my $t (sort keys %rx)
{
	my $r = $rx{$t};
	for (1 .. 1200)
	{
		last if -s $r->{port_file};
		usleep(50_000);
	}
	die "receiver $t did not start: " . slurp_file("$tmp/rx_$t.err") unless -s $r->{port_file};
	chomp(my $port = slurp_file($r->{port_file}));
	$r->{base} = "http://127.0.0.1:$port";
}
END
{
	for my $r (values %rx)
	{
		eval { $r->{h}->kill_kill(grace => 5) if $r->{h}; };
	}
}

sub rx_requests
{
	my ($t) = @_;
	my $res = $http->get("$rx{$t}{base}/_control/requests?since=0");
	die "receiver $t: $res->{status} $res->{content}" unless $res->{success};
	return decode_json($res->{content});
}

# ---------------------------------------------------------------------------
# The node, the roles and each tenant's endpoint and channel.

my $node = PostgreSQL::Test::Cluster->new('tenants');
$node->init;
$node->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'revenue_engine'
timezone = 'UTC'
revenue_engine.http_allow_private = on
EOC
$node->start;

sub q1 { my ($sql) = @_; return $node->safe_psql('postgres', $sql); }

# As an application role: (exit code, stdout, stderr).
sub as_role
{
	my ($role, $sql) = @_;
	my ($out, $err);
	my $rc = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
	return ($rc, $out, $err);
}

q1(q{
	CREATE EXTENSION revenue_engine;
	SELECT revenue_engine.register_event_type('plan_changed');
	CREATE ROLE app_acme LOGIN IN ROLE revenue_engine_user;
	CREATE ROLE app_beta LOGIN IN ROLE revenue_engine_user;
	CREATE ROLE app_shared LOGIN IN ROLE revenue_engine_user;
	SELECT revenue_engine.bind_role('app_acme', 'acme');
	SELECT revenue_engine.bind_role('app_beta', 'beta');
	GRANT app_shared TO app_beta;
});
for my $t (sort keys %SECRET)
{
	q1(qq{
		SET revenue_engine.tenant = '$t';
		SELECT revenue_engine.create_endpoint('hook', '$rx{$t}{base}/hook',
		         signing_secret => '$SECRET{$t}');
		SELECT revenue_engine.create_channel('provider', '$rx{$t}{base}/send',
		         body_template => '{"tenant": "$t"}');
	});
}
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM revenue_engine.workers WHERE database_name = current_database()}),
	'the delivery worker runs');

# ---------------------------------------------------------------------------
# 1. Each tenant's events and sends, by its bound role, and by the shared role.

for my $t (sort keys %SECRET)
{
	my ($rc, $out, $err) = as_role("app_$t", qq{
		SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 'plan_changed',
		                                          jsonb_build_object('n', i, 'by', '$t')))
		  FROM generate_series(1, 20) i;
		SELECT revenue_engine.track_daily_usage('11111111-1111-4111-8111-111111111111', 'reply')->'milestones';
		SELECT revenue_engine.enqueue_send('provider', '{"to": "+15550000001"}', 'k1');
	});
	is($rc, 0, "$t: its bound role enqueued 20 events, a milestone and a send") or diag($err);
}
{
	my ($rc, $out, $err) = as_role('app_shared', q{
		SET revenue_engine.tenant = 'beta';
		SELECT revenue_engine.enqueue_event(NULL, 'plan_changed', '{"by": "shared"}');
	});
	is($rc, 0, 'beta: the unbound shared role enqueued an event with the setting') or diag($err);
}

# ---------------------------------------------------------------------------
# 2. The forged event: beta's role sets acme and enqueues.

{
	my ($rc, $out, $err) = as_role('app_beta', q{
		SET revenue_engine.tenant = 'acme';
		SELECT revenue_engine.enqueue_event(NULL, 'plan_changed', '{"forged": true}');
	});
	isnt($rc, 0, 'forged: the bound role of beta cannot enqueue as acme');
	like($err, qr/42501.*role "app_beta" is bound to tenant "beta" and cannot act for tenant "acme"/,
		'forged: refused with 42501, naming the role and both tenants');
	($rc, $out, $err) = as_role('app_beta', q{
		SET ROLE app_shared;
		SET revenue_engine.tenant = 'acme';
		SELECT revenue_engine.enqueue_event(NULL, 'plan_changed', '{"forged": true}');
	});
	isnt($rc, 0, 'forged: nor after SET ROLE to an unbound role it is a member of');
	like($err, qr/42501/, 'forged: again 42501');
}
is(q1(q{SELECT count(*) FROM revenue_engine.webhook_events WHERE event_data ? 'forged'}), '0',
	'forged: no forged event exists');

# ---------------------------------------------------------------------------
# Everything delivered, each tenant to its own receiver, with its own secret.

ok($node->poll_query_until('postgres', q{
		SELECT count(*) FILTER (WHERE status <> 'sent') = 0
		       AND count(*) = (SELECT count(*) FROM revenue_engine.webhook_events)
		  FROM revenue_engine.deliveries}),
	'the worker delivered every event of both tenants');
ok($node->poll_query_until('postgres', q{
		SELECT count(*) FILTER (WHERE status = 'sent') = 2 FROM revenue_engine.sends}),
	'the worker sent both tenants\' sends');

for my $t (sort keys %SECRET)
{
	my $reqs  = rx_requests($t);
	my @hooks = grep { $_->{path} eq '/hook' } @$reqs;
	my @sends = grep { $_->{path} eq '/send' } @$reqs;
	my $n = q1(qq{SELECT count(*) FROM revenue_engine.webhook_events WHERE tenant_id = '$t'});
	ok($n >= 21, "$t: $n events, each with a delivery");
	is(scalar(@hooks), $n, "$t: its receiver got its $n events");
	is(scalar(grep { !$_->{verified} } @hooks), 0,
		"$t: every event is signed with $t\'s secret");
	my $ids = q1(qq{SELECT string_agg(id::text, ',' ORDER BY id) FROM revenue_engine.webhook_events
	                 WHERE tenant_id = '$t'});
	is(join(',', sort map { $_->{webhook_id} } @hooks), $ids,
		"$t: the events received are exactly $t\'s events");
	is(scalar(grep { ($_->{body} // '') =~ /"forged"/ } @hooks), 0, "$t: no forged event arrived");
	is(scalar(@sends), 1, "$t: its provider got its one send");
	like($sends[0]{body} // '', qr/"tenant": ?"$t"/, "$t: the send carries $t\'s channel template");
}

# ---------------------------------------------------------------------------
# 3. A database whose extension owner is not a superuser.

q1(q{
	CREATE ROLE re_owner SUPERUSER LOGIN;
	CREATE DATABASE owned OWNER re_owner;
});
$node->safe_psql('owned', qq{
	CREATE EXTENSION revenue_engine;
	SELECT revenue_engine.register_event_type('plan_changed');
	SELECT revenue_engine.bind_role('app_acme', 'acme');
	SET revenue_engine.tenant = 'acme';
	SELECT revenue_engine.create_endpoint('hook', '$rx{acme}{base}/owned',
	         signing_secret => '$SECRET{acme}');
	SELECT revenue_engine.create_channel('provider', '$rx{acme}{base}/owned-send');
}, extra_params => [ '-U', 're_owner' ]);
q1('ALTER ROLE re_owner NOSUPERUSER');
{
	my ($out, $err);
	my $rc = $node->psql('owned', q{
		SELECT revenue_engine.track_daily_usage('22222222-2222-4222-8222-222222222222', 'reply')->'milestones';
		SELECT timezone FROM revenue_engine.set_user_profile('22222222-2222-4222-8222-222222222222', 'Europe/Paris');
		SELECT revenue_engine.enqueue_event(NULL, 'plan_changed', '{"db": "owned"}') IS NOT NULL;
		SELECT revenue_engine.enqueue_send('provider', '{"to": "+15550000002"}') > 0;
		SELECT recipient_count FROM revenue_engine.create_blast('provider', 'owned',
		         recipients => '["+15550000003"]', message => 'hi', scheduled_for => '2030-01-01');
		SELECT total FROM revenue_engine.blast_funnel;
		SELECT revenue_engine.record_message_status('wamid.none', 'read');
	}, stdout => \$out, stderr => \$err, extra_params => [ '-U', 'app_acme' ]);
	is($rc, 0, 'non-superuser owner: the functions work for a bound role') or diag($err);
	is($out, join("\n", '[1]', 'Europe/Paris', 't', 't', '1', '1', 'parked'),
		'non-superuser owner: usage, profile, event, send, blast, funnel and status as expected');
	is($node->safe_psql('owned', q{
			SELECT count(*) FROM revenue_engine.webhook_events;
			SET revenue_engine.tenant = 'acme';
			SELECT count(*) FROM revenue_engine.webhook_events;
		}, extra_params => [ '-U', 're_owner' ]), "0\n2",
		'non-superuser owner: its own queries see only the tenant it sets');
	ok($node->poll_query_until('owned', q{
			SELECT count(*) FILTER (WHERE status = 'sent') = 2 FROM revenue_engine.deliveries}),
		'non-superuser owner: the worker delivered the tenant\'s events');
	my @owned = grep { $_->{path} eq '/owned' } @{ rx_requests('acme') };
	is(scalar(grep { $_->{verified} } @owned), 2,
		'non-superuser owner: both arrived signed with the tenant\'s secret');
}

$node->stop;
done_testing();
