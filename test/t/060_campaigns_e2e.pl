# Drip campaigns end to end (issue 12's TAP point): 10,000 contacts through a
# 3-step campaign (send, wait 1 minute, send, wait 1 minute, send), through
# the worker to a fake provider (test/lib/fake_provider.py: answers with a
# message id after 20-120 ms, records every request with its Idempotency-Key
# header and body), while replies (record_inbound_message), opt-outs
# (set_consent false) and conversions (an event named in the campaign's exit
# rules, enqueue_event) arrive from 4 parallel clients at random moments, and
# the worker is killed with SIGKILL in the middle (the postmaster restarts at
# once: restart_after_crash).  Half the contacts are in a campaign on an
# at-least-once channel, half on an at-most-once one.
#
# How it stays fast without faking the worker: the waits are the shortest a
# campaign can have (1 minute, the unit's minimum amount), and the contacts
# are enrolled in 20 waves over ~40 s, so the three sends of the waves
# overlap: the whole campaign runs in ~2.7 minutes of real time, every step
# claimed and sent by the real worker from the real schedule.
# RE_E2E_WAIT_MINUTES changes the waits, RE_E2E_CONTACTS the contacts.
#
# The expectation is computed here, from what each client did and when it
# committed, not from the engine's own bookkeeping:
#  - each stop runs in a transaction that, after the stop, records (table
#    e2e.stops, same transaction) the contact's enrollment and campaign
#    messages as that transaction sees them.  The stop holds the enrollment's
#    row lock until it commits, so no step can add a message between that
#    snapshot and the commit: the recorded messages are exactly those created
#    before the stop committed.  A send is allowed only if its message is
#    among them and was not cancelled by the stop (none queued may be left).
#  - a contact without a stop gets steps 1, 2 and 3.
#  - what the provider saw: each request names its contact and step in its
#    body (the templates print them) and its send in its Idempotency-Key.
#    At-least-once: any repeat of a step carries the same key and body;
#    at-most-once: no step is requested twice (a send lost in the crash is
#    'unknown': requested once or not at all, never again).
#
# RE_TEST_SEED=<n> repeats a run's choice of stops and their moments.
use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use List::Util qw(shuffle min max sum0);
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $t_start = Time::HiRes::time();
my $SEED    = ($ENV{RE_TEST_SEED} // '') =~ /^\d+$/ ? $ENV{RE_TEST_SEED} : int(rand(1 << 30));
srand($SEED);
note "seed $SEED (RE_TEST_SEED=$SEED repeats this run's stops)";

my $N          = ($ENV{RE_E2E_CONTACTS} // '') =~ /^\d+$/ ? $ENV{RE_E2E_CONTACTS} : 10_000;
my $WAIT_MIN   = ($ENV{RE_E2E_WAIT_MINUTES} // '') =~ /^\d+$/ ? $ENV{RE_E2E_WAIT_MINUTES} : 1;
my $WAVES      = 20;
my $WAVE_GAP   = 2.0;                        # seconds between enrollment waves
my $STEP_GAP   = 60 * $WAIT_MIN;             # between a contact's sends
my $CAMPAIGN_S = 2 * $STEP_GAP;              # a contact's first to last send
my $T_KILL     = $STEP_GAP + 10;             # mid-campaign: step 2 of the first waves in flight
my $NCLIENTS   = 4;
my $DELAY      = [ 0.02, 0.12 ];             # the provider's answer time, seconds
my $MIF        = 32;                         # channels' max_in_flight

my $root = $ENV{TESTDIR} // '.';
require "$root/test/lib/FakeProvider.pm";
my $tmp = PostgreSQL::Test::Utils::tempdir;
chmod 0755, $tmp;

my $fp = FakeProvider::start($root, $tmp);
FakeProvider::delay($fp, @$DELAY);

# ---------------------------------------------------------------------------
# The node

my $node = PostgreSQL::Test::Cluster->new('campaigns_e2e');
$node->init;
$node->append_conf('postgresql.conf', <<'EOC');
shared_preload_libraries = 'revenue_engine'
max_worker_processes = 16
max_connections = 40
timezone = 'UTC'
revenue_engine.http_allow_private = on
restart_after_crash = on
track_commit_timestamp = on
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION revenue_engine');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM revenue_engine.workers WHERE database_name = current_database()}),
	'the worker runs');

sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub rows
{
	my ($sql) = @_;
	return [ map { [ split /\|/, $_, -1 ] } grep { length } split /\n/, q1($sql) ];
}

# ---------------------------------------------------------------------------
# Channels, templates, campaigns, contacts.

my $RETRIES = '{1 second,1 second,2 seconds,5 seconds,10 seconds}';
my @CAMPAIGNS = ([ alo => 'at_least_once' ], [ amo => 'at_most_once' ]);
my $steps = encode_json([
	{ kind => 'send', template => 'e2e_step1' },
	{ kind => 'wait', amount => $WAIT_MIN + 0, unit => 'minutes' },
	{ kind => 'send', template => 'e2e_step2' },
	{ kind => 'wait', amount => $WAIT_MIN + 0, unit => 'minutes' },
	{ kind => 'send', template => 'e2e_step3' } ]);
my $settings = encode_json({ purpose => 'marketing', reentry => 'never',
	exit_rules => [ { event_type => 'conversion', match_key => 'membership_id' } ] });
q1("SELECT revenue_engine.register_event_type('conversion')");
for my $s (1 .. 3)
{
	q1("SELECT revenue_engine.create_template('e2e_step$s', 'Hi {{first_name|there}}, step $s for {{external_ref}}')");
}
for my $c (@CAMPAIGNS)
{
	my ($k, $delivery) = @$c;
	q1(qq{
		SELECT revenue_engine.create_channel('sms_$k', '$fp->{base}/$k/messages',
		         message_id_path => '{messages,0,id}', max_in_flight => $MIF, retry_schedule => '$RETRIES');
		SELECT revenue_engine.set_channel_kind('sms_$k', 'sms', '$delivery');
		SELECT revenue_engine.create_campaign('drip_$k', 'sms_$k', '$steps', '$settings');
		SELECT revenue_engine.activate_campaign('drip_$k');});
}
is(q1(q{SELECT string_agg(name || ':' || status, ',' ORDER BY name) FROM revenue_engine.campaigns}),
	'drip_alo:active,drip_amo:active', 'two active campaigns, one per channel');

# contact n: external ref c<n>, a phone, a user; even n in drip_alo, odd in drip_amo
sub phone_of { sprintf('+1555%07d', $_[0]) }
sub campaign_of { $_[0] % 2 ? 'amo' : 'alo' }
my $t_setup = Time::HiRes::time();
q1(qq{
	SELECT count(revenue_engine.upsert_contact('c' || g, phone => format('+1555%s', lpad(g::text, 7, '0')),
	                                            name => 'Contact ' || g, user_id => md5('e2e' || g)::uuid))
	  FROM generate_series(1, $N) g;
	SELECT count(*) FROM (SELECT revenue_engine.set_consent('c' || g, 'sms', 'marketing', true)
	                        FROM generate_series(1, $N) g) x;});
is(q1('SELECT count(*) FROM revenue_engine.contacts'), $N, "$N contacts with marketing consent on sms");
note sprintf('contacts set up in %.1f s', Time::HiRes::time() - $t_setup);

# What each stop saw, written in the stop's own transaction.
q1(q{
	CREATE SCHEMA e2e;
	CREATE TABLE e2e.stops (
	    op_id       integer PRIMARY KEY,
	    contact     text    NOT NULL,
	    kind        text    NOT NULL,
	    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
	    enrollment  jsonb,
	    messages    jsonb   NOT NULL);
	GRANT ALL ON SCHEMA e2e TO PUBLIC;});

# ---------------------------------------------------------------------------
# The plan: enrollment waves, and the stops of the 4 clients.

my $T0 = Time::HiRes::time() + 2;    # every client counts from here
my @wave_at;
my @enroll_ops;
for my $w (0 .. $WAVES - 1)
{
	my ($lo, $hi) = (int($w * $N / $WAVES) + 1, int(($w + 1) * $N / $WAVES));
	$wave_at[$_] = $w * $WAVE_GAP for $lo .. $hi;
	# enroll() returns the open enrollment of a contact already in: a wave
	# run again after a crash enrolls nobody twice
	push @enroll_ops, { id => $w, at => $w * $WAVE_GAP, marker => undef, sql => qq{
		SELECT count(revenue_engine.enroll(CASE WHEN g % 2 = 0 THEN 'drip_alo' ELSE 'drip_amo' END,
		                                   'c' || g, jsonb_build_object('membership_id', 'm-' || g)))
		  FROM generate_series($lo, $hi) g;} };
}

# the contact's state as this transaction sees it: its enrollment and its
# campaign messages with their sends
sub snapshot_sql
{
	my ($ref) = @_;
	return qq{
	    (SELECT jsonb_build_object('id', e.id, 'status', e.status, 'step', e.step, 'end_reason', e.end_reason)
	       FROM revenue_engine.enrollments e JOIN revenue_engine.contacts c
	         ON c.tenant_id = e.tenant_id AND c.id = e.contact_id
	      WHERE c.external_ref = '$ref' ORDER BY e.id DESC LIMIT 1),
	    (SELECT coalesce(jsonb_agg(jsonb_build_object('step', m.step, 'send_id', m.send_id,
	                                                  'status', m.status, 'send_status', s.status,
	                                                  'attempts', s.attempts)), '[]')
	       FROM revenue_engine.campaign_messages m
	       JOIN revenue_engine.contacts c ON c.tenant_id = m.tenant_id AND c.id = m.contact_id
	       JOIN revenue_engine.sends s ON s.tenant_id = m.tenant_id AND s.id = m.send_id
	      WHERE c.external_ref = '$ref')};
}

my %STOP_SQL = (
	reply    => sub { "SELECT revenue_engine.record_inbound_message('" . phone_of($_[0]) . "', now(), 'manual')" },
	optout   => sub { "SELECT revenue_engine.set_consent('c$_[0]', 'sms', 'marketing', false)" },
	convert  => sub { "SELECT revenue_engine.enqueue_event(md5('e2e$_[0]')::uuid, 'conversion', "
		  . "jsonb_build_object('membership_id', 'm-$_[0]', 'amount', 49))" },
	# negative controls: these must stop nothing
	convert_other => sub { "SELECT revenue_engine.enqueue_event(md5('e2e$_[0]')::uuid, 'conversion', "
		  . "jsonb_build_object('membership_id', 'm-other-$_[0]'))" },
	reply_stranger => sub { "SELECT revenue_engine.record_inbound_message('+1666" . sprintf('%07d', $_[0]) . "', now(), 'manual')" },
);
my %REAL = (reply => 1, optout => 1, convert => 1);

my (@ops, %ops_of);
my $op_id = 0;
for my $n (1 .. $N)
{
	my $r = rand();
	my @kinds =
	    $r < 0.05  ? ('reply')
	  : $r < 0.09  ? ('optout')
	  : $r < 0.13  ? ('convert')
	  : $r < 0.145 ? (('reply', 'optout', 'convert')[ rand 3 ], ('reply', 'optout', 'convert')[ rand 3 ])
	  : $r < 0.155 ? ('convert_other')
	  : $r < 0.16  ? ('reply_stranger')
	  :              ();
	for my $kind (@kinds)
	{
		my $id = ++$op_id;
		my $ref = "c$n";
		# a random moment from just after the contact's wave to past its last send
		my $at = $wave_at[$n] + 1 + rand($CAMPAIGN_S + 20);
		my $snap = snapshot_sql($ref);
		my $stop_sql = $STOP_SQL{$kind}->($n);
		my $sql = qq{
			DO \$\$BEGIN
			    FOR i IN 1..300 LOOP
			        EXIT WHEN EXISTS (SELECT 1 FROM revenue_engine.enrollments e JOIN revenue_engine.contacts c
			                            ON c.tenant_id = e.tenant_id AND c.id = e.contact_id
			                         WHERE c.external_ref = '$ref');
			        PERFORM pg_sleep(0.1);
			    END LOOP;
			END\$\$;
			BEGIN;
			$stop_sql;
			INSERT INTO e2e.stops (op_id, contact, kind, enrollment, messages)
			SELECT $id, '$ref', '$kind', $snap
			ON CONFLICT (op_id) DO NOTHING;
			COMMIT;};
		my $op = { id => $id, n => $n, kind => $kind, at => $at, sql => $sql,
			marker => "SELECT count(*) FROM e2e.stops WHERE op_id = $id" };
		push @ops, $op;
		push @{ $ops_of{$n} }, $op;
	}
}
my %nkind;
$nkind{ $_->{kind} }++ for @ops;
note 'stops planned: ' . join(', ', map { "$_ $nkind{$_}" } sort keys %nkind);

# ---------------------------------------------------------------------------
# Run: the enroller and 4 stop clients, each its own process; the kill here.

sub write_ops
{
	my ($file, $list) = @_;
	open my $fh, '>', $file or die "$file: $!";
	print $fh encode_json({ id => $_->{id}, at => $_->{at}, sql => $_->{sql}, marker => $_->{marker} }), "\n"
	  for @$list;
	close $fh;
}
my $DEADLINE = $WAVES * $WAVE_GAP + $CAMPAIGN_S + 150;
my @clients;
{
	my @share;
	my @sorted = shuffle(@ops);
	push @{ $share[ $_ % $NCLIENTS ] }, $sorted[$_] for 0 .. $#sorted;
	my @jobs = ([ 'enroll', \@enroll_ops ], map { [ "stops$_", $share[$_] // [] ] } 0 .. $NCLIENTS - 1);
	for my $j (@jobs)
	{
		my ($name, $list) = @$j;
		write_ops("$tmp/$name.ops", $list);
		push @clients, { name => $name, results => "$tmp/$name.results", err => "$tmp/$name.err",
			h => IPC::Run::start(
				[ 'perl', "$root/test/lib/campaign_client.pl", $node->connstr('postgres'), $T0,
				  "$tmp/$name.ops", "$tmp/$name.results", $DEADLINE ],
				'<', \undef, '>', "$tmp/$name.out", '2>', "$tmp/$name.err") };
	}
}
END { for my $c (@clients) { eval { $c->{h}->kill_kill(grace => 2) if $c->{h} && $c->{h}->pumpable } } }

# The kill: once sends are in flight mid-campaign.
my ($kill_t, $in_flight_at_kill, $sent_at_kill);
{
	my $wait = $T0 + $T_KILL - Time::HiRes::time();
	Time::HiRes::sleep($wait) if $wait > 0;
	my $deadline = Time::HiRes::time() + 20;
	my ($sending, $sent) = (0, 0);
	while (Time::HiRes::time() < $deadline)
	{
		($sending, $sent) = split /\|/, q1(q{SELECT count(*) FILTER (WHERE status = 'sending'),
		                                            count(*) FILTER (WHERE status = 'sent')
		                                       FROM revenue_engine.sends});
		last if $sending > 0;
		usleep(20_000);
	}
	my $pid = q1('SELECT pid FROM revenue_engine.workers WHERE database_name = current_database()');
	my $offset = -s $node->logfile;
	$kill_t = Time::HiRes::time();
	ok($pid && kill('KILL', $pid), sprintf('SIGKILL to the worker (pid %s) %.0f s into the run, '
			. 'with %d sends in flight and %d sent', $pid // '?', $kill_t - $T0, $sending, $sent));
	($in_flight_at_kill, $sent_at_kill) = ($sending, $sent);
	cmp_ok($sending, '>', 0, 'the kill found sends in flight');
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	ok($node->poll_query_until('postgres',
			q{SELECT count(*) = 1 FROM revenue_engine.workers WHERE database_name = current_database()}),
		'the worker is back after the restart');
	note sprintf('worker back %.1f s after the kill', Time::HiRes::time() - $kill_t);
}

# Wait for the clients, then for every enrollment to end and every send to settle.
$_->{h}->finish for @clients;
my %res;
for my $c (@clients)
{
	for my $line (split /\n/, slurp_file($c->{results}))
	{
		my $r = decode_json($line);
		$res{ $c->{name} }{ $r->{id} } = $r;
	}
}
{
	my @bad = grep { !$res{enroll}{$_}{ok} } 0 .. $WAVES - 1;
	is(scalar(@bad), 0, "all $WAVES enrollment waves committed")
	  or diag(explain([ map { $res{enroll}{$_} } @bad ]));
	my %r = map { %{ $res{"stops$_"} // {} } } 0 .. $NCLIENTS - 1;
	my @failed = grep { !($r{ $_->{id} } && $r{ $_->{id} }{ok}) } @ops;
	is(scalar(@failed), 0, scalar(@ops) . " stops and controls from $NCLIENTS clients all committed")
	  or diag(explain([ map { { op => $_->{kind}, n => $_->{n}, res => $r{ $_->{id} } } } @failed[ 0 .. min(4, $#failed) ] ]),
		"clients' errors:\n", join('', map { -s $_->{err} ? "$_->{name}: " . slurp_file($_->{err}) : '' } @clients));
	my $retried = grep { $_->{tries} > 1 } values %r;
	note "$retried stop operations were retried across the crash";
}
ok($node->poll_query_until('postgres', q{
		SELECT (SELECT count(*) FROM revenue_engine.enrollments WHERE status = 'active') = 0
		   AND (SELECT count(*) FROM revenue_engine.sends WHERE status IN ('queued', 'sending')) = 0}),
	'every enrollment ended and every send settled');
note sprintf('campaigns done %.0f s after the start', Time::HiRes::time() - $T0);

# ===========================================================================
# What happened

# enrollments: ref => { status, end_reason, campaign }
my %enr;
for my $f (@{ rows(q{
	SELECT c.external_ref, e.status, coalesce(e.end_reason, ''), k.name, count(*) OVER (PARTITION BY c.id)
	  FROM revenue_engine.enrollments e
	  JOIN revenue_engine.contacts c ON c.tenant_id = e.tenant_id AND c.id = e.contact_id
	  JOIN revenue_engine.campaigns k ON k.tenant_id = e.tenant_id AND k.id = e.campaign_id}) })
{
	$enr{ $f->[0] } = { status => $f->[1], end_reason => $f->[2], campaign => $f->[3], count => $f->[4] };
}
is(scalar(keys %enr), $N, "$N contacts enrolled");
is(scalar(grep { $_->{count} != 1 } values %enr), 0, 'each exactly once');
is(scalar(grep { $enr{"c$_"} && $enr{"c$_"}{campaign} ne 'drip_' . campaign_of($_) } 1 .. $N), 0,
	'each in its campaign');

# campaign messages: ref => step => { send_id, status, send_status, key, attempts }
my (%msg, %send_of);
for my $f (@{ rows(q{
	SELECT c.external_ref, m.step, m.send_id, m.status, s.status, coalesce(s.idempotency_key, ''), s.attempts
	  FROM revenue_engine.campaign_messages m
	  JOIN revenue_engine.contacts c ON c.tenant_id = m.tenant_id AND c.id = m.contact_id
	  JOIN revenue_engine.sends s ON s.tenant_id = m.tenant_id AND s.id = m.send_id}) })
{
	my ($ref, $step, $sid, $st, $sst, $key, $att) = @$f;
	# the campaign's step positions 1, 3, 5 are its sends 1, 2, 3
	my $k = ($step + 1) / 2;
	fail("contact $ref has two messages for send $k") if $msg{$ref}{$k};
	$msg{$ref}{$k} = { send_id => $sid, status => $st, send_status => $sst, key => $key, attempts => $att, step => $step };
	$send_of{$sid} = [ $ref, $k ];
}

# the provider's requests: ref => send => [ request ... ]
my (%req, @alien);
my $requests = FakeProvider::requests($fp);
for my $q (@$requests)
{
	my ($k, $ref) = $q->{body} =~ /step (\d) for (c\d+)\b/ ? ($1, $2) : ();
	my ($sid) = ($q->{idempotency_key} // '') =~ /^revenue-engine-send-default-(\d+)$/;
	if (!defined $ref || !defined $sid || !$send_of{$sid} || "@{ $send_of{$sid} }" ne "$ref $k"
		|| $q->{path} ne '/' . campaign_of(substr($ref, 1)) . '/messages')
	{
		push @alien, $q;
		next;
	}
	push @{ $req{$ref}{$k} }, $q;
}
is(scalar(@alien), 0, scalar(@$requests) . ' provider requests, each naming (in its body) the contact and '
	  . 'step of the campaign message its Idempotency-Key\'s send belongs to, on its campaign\'s channel')
  or diag(explain([ map { { key => $_->{idempotency_key}, path => $_->{path}, body => $_->{body} } }
	  @alien[ 0 .. min(4, $#alien) ] ]));

# the stops' snapshots: ref => [ { kind, enrollment, messages } ] in commit order
my %stops;
for my $f (@{ rows(q{SELECT contact, kind, coalesce(enrollment::text, 'null'), messages::text, op_id
                       FROM e2e.stops ORDER BY pg_xact_commit_timestamp(xmin), op_id}) })
{
	push @{ $stops{ $f->[0] } }, { kind => $f->[1], enrollment => decode_json($f->[2]),
		messages => decode_json($f->[3]), op => $f->[4] };
}

# ===========================================================================
# Every contact against the expectation

my (%why, %example, %tally);
sub wrong
{
	my ($ref, $what) = @_;
	$why{$what}++;
	$example{$what} //= $ref;
}
for my $n (1 .. $N)
{
	my $ref  = "c$n";
	my $e    = $enr{$ref} // next;
	my $kind = campaign_of($n);
	my $m    = $msg{$ref} // {};
	my $r    = $req{$ref} // {};

	# The first stop that found the enrollment open and left it exited.
	my ($stop) = grep { $REAL{ $_->{kind} } && ($_->{enrollment}{status} // '') eq 'exited' } @{ $stops{$ref} // [] };
	for my $s (@{ $stops{$ref} // [] })
	{
		my $st = $s->{enrollment}{status} // 'none';
		wrong($ref, 'a stop found no enrollment') if $st eq 'none';
		wrong($ref, 'a stop left the enrollment active') if $REAL{ $s->{kind} } && $st eq 'active';
		wrong($ref, 'a control (conversion of another membership, reply of a stranger) exited the enrollment')
		  if !$REAL{ $s->{kind} } && $st eq 'exited' && !grep { $REAL{ $_->{kind} } } @{ $stops{$ref} };
	}
	my %allowed;    # send number => 1: may have reached the provider
	if ($stop)
	{
		$tally{stopped}++;
		wrong($ref, 'stopped, but the enrollment did not end exited') if $e->{status} ne 'exited';
		my %seen = map { (($_->{step} + 1) / 2 => $_) } @{ $stop->{messages} };
		# nothing created after the stop committed
		wrong($ref, 'a campaign message created after the stop committed')
		  if grep { !$seen{$_} } keys %$m;
		for my $k (keys %seen)
		{
			my $ss = $seen{$k}{send_status};
			wrong($ref, 'a send still queued after the stop') if $ss eq 'queued';
			# A send cancelled with an attempt behind it was claimed before
			# the stop committed (its outcome lost in the crash, it waited for
			# its retry): that attempt may have reached the provider, the
			# retry never does.
			if ($ss eq 'cancelled' && !$seen{$k}{attempts}) { $tally{cancelled}++; }
			elsif ($ss eq 'cancelled') { $tally{cancelled_after_attempt}++; $allowed{$k} = 1; }
			else { $allowed{$k} = 1; }
		}
		# the same snapshot in every later stop of the contact
		for my $s (grep { $_ != $stop && ($_->{enrollment}{status} // '') eq 'exited' } @{ $stops{$ref} })
		{
			wrong($ref, 'a later stop saw other messages than the first')
			  unless join(',', sort map { $_->{send_id} } @{ $s->{messages} })
			  eq join(',', sort map { $_->{send_id} } @{ $stop->{messages} });
		}
	}
	else
	{
		$tally{completed}++;
		wrong($ref, 'not stopped, but the enrollment did not complete') if $e->{status} ne 'completed';
		wrong($ref, 'not stopped, but not all 3 sends were queued') if join(',', sort keys %$m) ne '1,2,3';
		%allowed = (1 => 1, 2 => 1, 3 => 1);
	}
	for my $k (1 .. 3)
	{
		my @q = @{ $r->{$k} // [] };
		my $mk = $m->{$k};
		if (!$allowed{$k})
		{
			wrong($ref, 'a send reached the provider that the stop had cancelled, or that came after the stop') if @q;
			next;
		}
		next unless $mk;
		$tally{ "requests_$kind" } += @q;
		my %keys = map { ($_->{idempotency_key} => 1) } @q;
		wrong($ref, 'one step sent under two idempotency keys') if keys %keys > 1;
		if ($kind eq 'alo')
		{
			wrong($ref, 'at-least-once: a send never reached the provider') if !@q && $mk->{send_status} ne 'cancelled';
			wrong($ref, 'at-least-once: a repeated request differs in its body')
			  if grep { $_->{body} ne $q[0]{body} } @q;
			$tally{alo_repeats} += @q - 1 if @q > 1;
			# (or cancelled: its retry, after an attempt whose outcome was lost)
			wrong($ref, 'sent, but the send is not marked sent')
			  if @q && $mk->{send_status} ne 'sent' && !($mk->{send_status} eq 'cancelled' && $mk->{attempts});
		}
		else
		{
			wrong($ref, 'at-most-once: a step requested twice') if @q > 1;
			if ($mk->{send_status} eq 'unknown') { $tally{amo_unknown}++; $tally{amo_unknown_reached} += @q; }
			elsif ($mk->{send_status} eq 'sent') { wrong($ref, 'at-most-once: sent but never requested') if !@q; }
			elsif (@q) { wrong($ref, "at-most-once: requested, but the send is $mk->{send_status}"); }
		}
	}
}
is(join('; ', map { "$_: $why{$_} (e.g. $example{$_})" } sort keys %why), '',
	"every contact's sends are what its stops allow: none after its stop, cancelled ones never, "
	  . 'the rest exactly as its channel promises')
  or do
{
	for my $what (sort keys %why)
	{
		my $ref = $example{$what};
		diag("$what, e.g. $ref: "
			  . JSON::PP->new->canonical->encode({ enrollment => $enr{$ref}, messages => $msg{$ref},
				stops => $stops{$ref},
				requests => { map { my $k = $_; ($k => [ map { { key => $_->{idempotency_key}, t => $_->{time} } }
								@{ $req{$ref}{$k} } ]) } keys %{ $req{$ref} // {} } } }));
	}
};
note 'tally: ' . join(', ', map { "$_ $tally{$_}" } sort keys %tally);
ok(($tally{stopped} // 0) > 0 && ($tally{completed} // 0) > 0, 'some contacts were stopped, the others completed');

# exit reasons name the stop
{
	my %reasons;
	for my $ref (keys %stops)
	{
		my ($stop) = grep { $REAL{ $_->{kind} } && ($_->{enrollment}{status} // '') eq 'exited' } @{ $stops{$ref} };
		next unless $stop;
		$reasons{"$stop->{kind} -> " . ($stop->{enrollment}{end_reason} // '')}++;
	}
	note 'end reasons: ' . join(', ', map { "$_: $reasons{$_}" } sort keys %reasons);
	my %by_kind;
	for (keys %reasons) { my ($k, $why) = split / -> /; $by_kind{$k}{$why} = 1; }
	is(join(',', grep { keys %{ $by_kind{$_} } != 1 || exists $by_kind{$_}{''} } sort keys %by_kind), '',
		'each kind of stop ends enrollments with one, non-empty reason');
}

# history: every ended enrollment has its one ending row
is(q1(q{SELECT count(*) FROM revenue_engine.enrollments e
         WHERE e.status <> 'active'
           AND (SELECT count(*) FROM revenue_engine.enrollment_history h
                 WHERE h.tenant_id = e.tenant_id AND h.enrollment_id = e.id
                   AND h.event = CASE e.status WHEN 'exited' THEN 'exited' ELSE 'completed' END) <> 1}),
	'0', 'enrollment_history: one exited or completed row per ended enrollment');

my $log = slurp_file($node->logfile);
my @crashes = grep { /terminated by signal/ } split /\n/, $log;
is(scalar(grep { !/revenue_engine/ } @crashes), 0,
	'no server process other than the killed worker crashed');
unlike($log, qr/PANIC/, 'no PANIC');
note sprintf('run time %.1f s', Time::HiRes::time() - $t_start);

$node->stop;
done_testing();
