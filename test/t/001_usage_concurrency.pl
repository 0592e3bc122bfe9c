# Concurrency of revenue_engine.track_daily_usage: 8 clients make 10,000
# autocommit calls each, at the same time, on 100 users.  The calls are
# generated here with a fixed seed, so every expected total, milestone and
# goal is computed independently in Perl and compared with the database and
# with the 80,000 responses.
use strict;
use warnings;

use IPC::Run;
use Time::HiRes;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $NCLIENTS = 8;
my $NCALLS   = 10_000;    # per client
my $NUSERS   = 100;
my $MAXN     = 23;        # counts are 1..$MAXN
my $GOAL     = 10;        # built-in daily goal of 'reply'
my @LADDER   = (1, 10, 50, 100, 500, 1000, 5000, 10000);
my $TODAY    = '2024-06-15';

# Fixed clock: every call lands on the same local day whenever the test runs.
my $node = PostgreSQL::Test::Cluster->new('usage_concurrency');
$node->init;
$node->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'revenue_engine'
max_connections = 20
timezone = 'UTC'
revenue_engine.clock_override = '$TODAY 12:00:00+00'
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION revenue_engine');
$node->safe_psql('postgres',
	"SELECT revenue_engine.set_usage_type('reply', milestones => '{"
	  . join(',', @LADDER) . "}')");

# ---------------------------------------------------------------------------
# The calls.  Users 95..99 get a few fixed calls on the edges of the goal and
# of the low thresholds (totals 1, 9, 10, 49, 50); users 0..94 share the rest.
srand(20240615);
sub user_uuid { sprintf('00000000-0000-4000-8000-%012d', $_[0]) }

my @calls;    # [user index, count]
my %edge = (95 => [1], 96 => [4, 5], 97 => [3, 3, 4], 98 => [20, 20, 9],
	99 => [10, 10, 10, 10, 9, 1]);
push @calls, map { my $u = $_; map { [ $u, $_ ] } @{ $edge{$u} } } sort keys %edge;
push @calls, [ int(rand(95)), 1 + int(rand($MAXN)) ]
  while @calls < $NCLIENTS * $NCALLS;
for (my $i = $#calls; $i > 0; $i--)    # Fisher-Yates with the seeded rand
{
	my $j = int(rand($i + 1));
	@calls[ $i, $j ] = @calls[ $j, $i ];
}

my %total;
$total{ $_->[0] } += $_->[1] for @calls;
is(scalar(keys %total), $NUSERS, "the generated calls cover $NUSERS users");

# Client c replays calls c*NCALLS .. (c+1)*NCALLS-1, one autocommit statement each.
my $dir = PostgreSQL::Test::Utils::tempdir;
my (@files, @out, @handles);
for my $c (0 .. $NCLIENTS - 1)
{
	my $sql = '';
	for my $k ($c * $NCALLS .. ($c + 1) * $NCALLS - 1)
	{
		my ($u, $n) = @{ $calls[$k] };
		$sql .= "SELECT revenue_engine.track_daily_usage('"
		  . user_uuid($u)
		  . "', 'reply', $n);\n";
	}
	$files[$c] = "$dir/client_$c.sql";
	PostgreSQL::Test::Utils::append_to_file($files[$c], $sql);
}

# ---------------------------------------------------------------------------
# Run the 8 clients at the same time.  Their output goes to files, not pipes:
# a client whose pipe nobody reads would stall and the run would be serial.
my $t0 = Time::HiRes::time();
for my $c (0 .. $NCLIENTS - 1)
{
	$handles[$c] = IPC::Run::start(
		[
			'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres') . " application_name=re_client_$c",
			'-f', $files[$c]
		],
		'<', \undef, '>', "$dir/client_$c.out", '2>', "$dir/client_$c.err",
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
}

# Watch the clients: all 8 sessions must be connected at once.
my ($max_connected, $max_active) = (0, 0);
for (1 .. 200)
{
	my ($connected, $active) = split /\|/, $node->safe_psql('postgres',
		q{SELECT count(*), count(*) FILTER (WHERE state = 'active')
		    FROM pg_stat_activity WHERE application_name LIKE 're_client_%'});
	$max_connected = $connected if $connected > $max_connected;
	$max_active    = $active    if $active > $max_active;
	last if $max_connected == $NCLIENTS && $max_active >= 2;
	Time::HiRes::usleep(20_000);
}

my @client_problems;
for my $c (0 .. $NCLIENTS - 1)
{
	$handles[$c]->finish;
	my $rc    = $handles[$c]->result;
	my $err   = PostgreSQL::Test::Utils::slurp_file("$dir/client_$c.err");
	my @lines = split /\n/, PostgreSQL::Test::Utils::slurp_file("$dir/client_$c.out");
	push @client_problems,
	  "client $c: exit $rc, " . scalar(@lines) . " results, stderr: $err"
	  if $rc != 0 || $err ne '' || @lines != $NCALLS;
	$out[$c] = \@lines;
}
note sprintf('%d calls by %d clients in %.1f s; seen at once: %d sessions, %d active',
	$NCLIENTS * $NCALLS, $NCLIENTS, Time::HiRes::time() - $t0,
	$max_connected, $max_active);
is($max_connected, $NCLIENTS, "the $NCLIENTS client sessions ran at the same time");
is_deeply(\@client_problems, [],
	"$NCLIENTS clients each ran $NCALLS calls without error");

# ---------------------------------------------------------------------------
# Expected state, from the generated calls alone.  Every call is on $TODAY,
# so today's count of a user is their lifetime total.
my (@exp_totals, @exp_daily, @exp_ms, @exp_ms_events, @exp_goal_events);
for my $u (sort { $a <=> $b } keys %total)
{
	my $id = user_uuid($u);
	push @exp_totals, "$id $total{$u}";
	push @exp_daily, "$id $TODAY $total{$u} " . ($total{$u} >= $GOAL ? 'achieved' : '-');
	for my $m (grep { $_ <= $total{$u} } @LADDER)
	{
		push @exp_ms,        "$id $m";
		push @exp_ms_events, "$id $m x1";
	}
	push @exp_goal_events, "$id $TODAY x1" if $total{$u} >= $GOAL;
}
@$_ = sort @$_ for \@exp_totals, \@exp_daily, \@exp_ms, \@exp_ms_events, \@exp_goal_events;
note sprintf('%d users reached 10000, %d milestone rows, %d goal events expected',
	scalar(grep { $_ >= 10000 } values %total),
	scalar(@exp_ms), scalar(@exp_goal_events));

# Rows of a query, one string each, sorted like the expected lists.
sub rows
{
	my ($sql) = @_;
	return [ sort split /\n/, $node->safe_psql('postgres', $sql) ];
}

is_deeply(
	rows(q{SELECT user_id || ' ' || total FROM revenue_engine.lifetime_usage
	        WHERE usage_type = 'reply'}),
	\@exp_totals,
	'lifetime total of every user is the sum of their counts');

is_deeply(
	rows(q{SELECT user_id || ' ' || usage_date || ' ' || count || ' '
	              || CASE WHEN goal_achieved_at IS NULL THEN '-' ELSE 'achieved' END
	         FROM revenue_engine.daily_usage
	        WHERE usage_type = 'reply'}),
	\@exp_daily,
	"daily_usage holds one row per user for $TODAY with that count, goal achieved iff count >= $GOAL");

is_deeply(
	rows(q{SELECT user_id || ' ' || milestone FROM revenue_engine.milestones_reached
	        WHERE usage_type = 'reply'}),
	\@exp_ms,
	'milestones_reached holds exactly the thresholds <= each user\'s total');

is_deeply(
	rows(q{SELECT user_id || ' ' || (event_data->>'milestone_value') || ' x' || count(*)
	         FROM revenue_engine.webhook_events
	        WHERE event_type = 'milestone_reached' AND event_data->>'usage_type' = 'reply'
	        GROUP BY user_id, event_data->>'milestone_value'}),
	\@exp_ms_events,
	'exactly one milestone_reached event per (user, threshold) reached');

is(
	$node->safe_psql('postgres',
		q{SELECT count(*) FROM revenue_engine.milestones_reached m
		   WHERE NOT EXISTS (SELECT 1 FROM revenue_engine.webhook_events e
		                      WHERE e.id = m.event_id AND e.user_id = m.user_id
		                        AND e.event_type = 'milestone_reached'
		                        AND (e.event_data->>'milestone_value')::bigint = m.milestone)}),
	'0',
	'every milestones_reached row points at its own event');

is_deeply(
	rows(q{SELECT user_id || ' ' || (event_data->>'date') || ' x' || count(*)
	         FROM revenue_engine.webhook_events
	        WHERE event_type = 'daily_goal_achieved' AND event_data->>'usage_type' = 'reply'
	        GROUP BY user_id, event_data->>'date'}),
	\@exp_goal_events,
	"exactly one daily_goal_achieved event per user with count >= $GOAL, none for others");

# ---------------------------------------------------------------------------
# The responses: per user, the returned totals must chain into one serial
# order (each total = the previous one + its count, from 0), each call must
# report exactly the thresholds in (total - count, total], and the goal must be
# reported just achieved by exactly the call that crossed it.
my %seen;    # user => [[total, count, milestones, just_achieved], ...]
my @response_problems;
for my $c (0 .. $NCLIENTS - 1)
{
	for my $i (0 .. $#{ $out[$c] })
	{
		my ($u, $n) = @{ $calls[ $c * $NCALLS + $i ] };
		my $r = $out[$c][$i];
		my ($t)  = $r =~ /"lifetime_total": (\d+)/;
		my ($ms) = $r =~ /"milestones": \[([^\]]*)\]/;
		my ($j)  = $r =~ /"goal_just_achieved": (true|false)/;
		if (!defined $t || !defined $ms || !defined $j)
		{
			push @response_problems, "client $c call $i: unparsable response $r";
			next;
		}
		push @{ $seen{$u} }, [ $t, $n, join(',', split(/,\s*/, $ms)), $j eq 'true' ];
	}
}
for my $u (sort { $a <=> $b } keys %seen)
{
	my $prev = 0;
	my $just = 0;
	for my $call (sort { $a->[0] <=> $b->[0] } @{ $seen{$u} })
	{
		my ($t, $n, $ms, $j) = @$call;
		push @response_problems, "user $u: total $t after $prev with count $n"
		  if $t - $n != $prev;
		my $want = join(',', grep { $_ > $t - $n && $_ <= $t } @LADDER);
		push @response_problems, "user $u: total $t reported milestones [$ms], want [$want]"
		  if $ms ne $want;
		my $should = ($t - $n < $GOAL && $t >= $GOAL) ? 1 : 0;
		push @response_problems, "user $u: total $t goal_just_achieved=$j, want $should"
		  if ($j ? 1 : 0) != $should;
		$prev = $t;
	}
}
is(scalar(@response_problems), 0,
	'the 80,000 responses form one serial order per user with the right milestones and goal')
  or diag(join("\n", grep { defined } @response_problems[ 0 .. 19 ]));

$node->stop;
done_testing();
