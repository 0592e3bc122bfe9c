# A blast end to end (issue 5's acceptance point): create_blast sends about
# 2,000 messages through the worker to a fake WhatsApp provider (the test
# receiver in provider mode: it answers with message ids, fails 5% of the
# requests so retries happen, under the channel's rate limit); then signed
# WhatsApp Cloud API callbacks for every recipient -- every intermediate
# status, ~10% duplicates, replies by context id and by phone, failures --
# shuffled, in bodies of 1 to 50 items, from 4 parallel clients.  Afterwards
# every recipient has the status the rules give, blast_funnel and blast_stuck
# equal a scan of blast_recipients and the counts computed here, and
# status_history holds one row per change.  A second blast's statuses arrive
# before its sends (its channel held): they are parked, then applied when the
# message ids land.  Bad signatures are refused with SQLSTATE 28000.
#
# RE_TEST_SEED=<n> repeats a run's recipients, outcomes and batches (the
# interleaving of the 4 clients is the machine's).
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use List::Util qw(shuffle sum0 max min);
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $t_start = Time::HiRes::time();
my $SEED    = ($ENV{RE_TEST_SEED} // '') =~ /^\d+$/ ? $ENV{RE_TEST_SEED} : int(rand(1 << 30));
srand($SEED);
note "seed $SEED (RE_TEST_SEED=$SEED repeats this run's data)";

my $NRECIPIENTS = 2000;
my $NDUPS       = 25;
my $RATE        = 400;          # channel rate limit, per second
my $FAIL_RATIO  = 0.05;         # provider answers 500 to this share of sends
my $NCLIENTS    = 4;
my $MAX_ROUNDS  = 4;            # a failed callback is sent again, like a provider would
my $SECRET      = 'app-secret-' . join('', map { ('a' .. 'z')[ rand 26 ] } 1 .. 20);
my $LATE_SECRET = 'late-secret-' . join('', map { ('a' .. 'z')[ rand 26 ] } 1 .. 20);
my $NLATE       = 30;

my $root = $ENV{TESTDIR} // '.';
require "$root/test/lib/Receiver.pm";
my $tmp  = PostgreSQL::Test::Utils::tempdir;
my $JSON = JSON::PP->new->canonical;
my $http = Receiver::http();

# ---------------------------------------------------------------------------
# Fake providers: "main" numbers its message ids, "late" derives them from
# the recipient ("wamid.L<digits>"), so callbacks can name them before the send.

my %rx;
for my $name (qw(main late))
{
	my $r = { name => $name, port_file => "$tmp/rx_$name.port" };
	$r->{h} = IPC::Run::start(
		[
			'python3', "$root/test/receiver/receiver.py", '--port', '0',
			'--port-file', $r->{port_file}, '--log', "$tmp/rx_$name.jsonl"
		],
		'<', \undef, '>', "$tmp/rx_$name.out", '2>', "$tmp/rx_$name.err");
	$rx{$name} = $r;
}
END
{
	my $rc = $?;
	for my $r (values %rx) { eval { $r->{h}->kill_kill(grace => 5) } if $r->{h}; }
	$? = $rc;
}
for my $r (values %rx)
{
	for (1 .. 600) { last if -s $r->{port_file}; usleep(50_000); }
	die "receiver $r->{name} did not start: " . slurp_file("$tmp/rx_$r->{name}.err")
	  unless -s $r->{port_file};
	chomp(my $port = slurp_file($r->{port_file}));
	$r->{base} = "http://127.0.0.1:$port";
}

sub rx_call
{
	my ($r, $method, $path, $obj) = @_;
	my $res = $http->request($method, "$r->{base}/_control/$path",
		defined $obj
		? { content => encode_json($obj), headers => { 'content-type' => 'application/json' } }
		: {});
	die "receiver $r->{name}: $method $path: $res->{status} $res->{content}"
	  unless $res->{success};
	return decode_json($res->{content});
}
rx_call($rx{main}, 'POST', 'mode',
	{ mode => 'provider', shape => 'whatsapp', fail_ratio => $FAIL_RATIO });
rx_call($rx{late}, 'POST', 'mode',
	{ mode => 'provider', shape => 'whatsapp', id_from => 'to', id_prefix => 'wamid.L',
	  fail_ratio => $FAIL_RATIO });

# ---------------------------------------------------------------------------
# The node

my $node = PostgreSQL::Test::Cluster->new('blast_e2e');
$node->init;
$node->append_conf('postgresql.conf', <<'EOC');
shared_preload_libraries = 'revenue_engine'
max_worker_processes = 16
timezone = 'UTC'
revenue_engine.http_allow_private = on
deadlock_timeout = '200ms'
# a crashing backend must not end the test: the rest shows what it left behind
restart_after_crash = on
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION revenue_engine');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM revenue_engine.workers
		   WHERE database_name = current_database() AND state IN ('idle', 'delivering', 'maintenance')}),
	'the delivery worker runs');

sub q1 { return $node->safe_psql('postgres', $_[0]); }

# rows of a query as arrays of fields
sub rows
{
	my ($sql) = @_;
	return [ map { [ split /\|/, $_, -1 ] } grep { length } split /\n/, q1($sql) ];
}

my $RETRIES = '{' . join(',', ('1 second') x 8) . '}';
q1(qq{
	SELECT revenue_engine.create_channel('wa', '$rx{main}{base}/v19.0/1234567890/messages',
	         headers => '{"Authorization": "Bearer test-token"}',
	         body_template => '{"messaging_product": "whatsapp", "recipient_type": "individual"}',
	         message_id_path => '{messages,0,id}', max_in_flight => 32,
	         rate_limit => $RATE, rate_period => 'second', retry_schedule => '$RETRIES');
	SELECT revenue_engine.set_channel_status_source('wa', webhook_kind => 'whatsapp',
	         webhook_secret => '$SECRET');
	SELECT revenue_engine.create_channel('wa_late', '$rx{late}{base}/v19.0/999/messages',
	         body_template => '{"messaging_product": "whatsapp"}',
	         message_id_path => '{messages,0,id}', retry_schedule => '$RETRIES', enabled => false);
	SELECT revenue_engine.set_channel_status_source('wa_late', webhook_kind => 'whatsapp',
	         webhook_secret => '$LATE_SECRET')});

# ===========================================================================
# 1. The blast: 2,000 distinct numbers (some written with separators), 25 of
# them given again later, 7 that are not E.164.

my $phone_of = sub { sprintf('+1555%07d', $_[0]) };
my @bad = (
	[ '15550001234',       'does not start with + and a country code' ],
	[ '+0155500012',       'has a country code starting with 0' ],
	[ '+1555',             'does not have 7 to 15 digits' ],
	[ '+1555000123456789', 'does not have 7 to 15 digits' ],
	[ '+1555abc0000',      'has a character other than digits, spaces, dots, dashes and parentheses' ],
	[ '',                  'is empty' ],
	[ undef,               'is empty' ]);
my $bad_array = 'ARRAY[' . join(', ', map { defined $_->[0] ? "'$_->[0]'" : 'NULL' } @bad) . ']::text[]';
my $query = qq{
	SELECT phone, name FROM (
	    SELECT g AS pos,
	           CASE WHEN g % 7 = 0 THEN format('+1 (555) %s-%s', substr(n, 1, 3), substr(n, 4))
	                WHEN g % 11 = 0 THEN format('+1.555.%s.%s', substr(n, 1, 3), substr(n, 4))
	                ELSE '+1555' || n END AS phone,
	           'user ' || g AS name
	      FROM generate_series(1, $NRECIPIENTS) g, LATERAL (SELECT lpad(g::text, 7, '0') AS n) x
	    UNION ALL
	    SELECT $NRECIPIENTS + d, '+1555' || lpad((d * 37)::text, 7, '0'), 'again ' || d
	      FROM generate_series(1, $NDUPS) d
	    UNION ALL
	    SELECT $NRECIPIENTS + $NDUPS + b.i, b.phone, 'bad ' || b.i
	      FROM unnest($bad_array) WITH ORDINALITY AS b(phone, i)) q
	 ORDER BY pos};

my $t_blast = Time::HiRes::time();
my ($blast, $count, $dups, $rejected) = split /\|/, q1(qq{
	SELECT * FROM revenue_engine.create_blast('wa', 'e2e-campaign', recipients_query => \$rq\$$query\$rq\$,
	         message => 'Hi {{name}}, your order for {{phone}} is ready', on_invalid => 'skip')});
is("$count|$dups|$rejected", "$NRECIPIENTS|$NDUPS|" . scalar(@bad),
	"create_blast: $NRECIPIENTS recipients, $NDUPS duplicates, " . scalar(@bad) . ' rejected');
is(q1("SELECT string_agg(position || ':' || coalesce(input, '<null>') || ':' || reason, ';' ORDER BY position)
         FROM revenue_engine.blast_rejections WHERE blast_id = $blast"),
	join(';', map { ($NRECIPIENTS + $NDUPS + $_ + 1) . ':' . ($bad[$_][0] // '<null>') . ":$bad[$_][1]" } 0 .. $#bad),
	'blast_rejections: each bad number with its position and reason');
is(q1("SELECT string_agg(phone || '=' || name, ',' ORDER BY phone) FROM revenue_engine.blast_recipients
        WHERE blast_id = $blast AND phone IN ('+15550000037', '+15550000074', '+15550000077')"),
	'+15550000037=user 37,+15550000074=user 74,+15550000077=user 77',
	'a number given twice (also with separators) keeps its first name');

ok($node->poll_query_until('postgres', "SELECT status FROM revenue_engine.blasts WHERE id = $blast", 'completed'),
	'the blast is completed');
my $send_secs = Time::HiRes::time() - $t_blast;
note sprintf('blast of %d sent in %.1f s', $NRECIPIENTS, $send_secs);

# recipient id => { phone, name, status, mid, sent_at, attempts }
my %rcp;
for my $f (@{ rows(qq{
	SELECT r.id, r.phone, r.name, r.status, coalesce(r.provider_message_id, ''),
	       coalesce(extract(epoch FROM r.sent_at)::text, ''), s.attempts, s.status
	  FROM revenue_engine.blast_recipients r
	  JOIN revenue_engine.sends s ON s.tenant_id = r.tenant_id AND s.recipient_id = r.id
	 WHERE r.blast_id = $blast}) })
{
	$rcp{ $f->[0] } = { id => $f->[0], phone => $f->[1], name => $f->[2], status => $f->[3],
		mid => $f->[4], sent_at => $f->[5], attempts => $f->[6], send_status => $f->[7] };
}
my @ids = sort { $a <=> $b } keys %rcp;
is(scalar(@ids), $NRECIPIENTS, "$NRECIPIENTS recipients, one send each");
is(scalar(grep { $_->{status} ne 'sent' || $_->{send_status} ne 'sent' || $_->{mid} eq '' || $_->{sent_at} eq '' }
	  values %rcp), 0, 'every recipient is sent, with a provider message id and sent_at');
is(join(',', map { my $r = $rcp{$_}; $r->{phone} eq $phone_of->($r->{name} =~ s/^user //r) ? () : $r->{id} } @ids),
	'', 'every recipient has its normalized number and the name given with it');

# What the provider saw and answered.
{
	my $reqs = rx_call($rx{main}, 'GET', 'requests?since=0');
	my (%answers, %tries, @bad_body);
	for my $q (@$reqs)
	{
		my $b  = eval { decode_json($q->{body}) } // {};
		my $to = $b->{to} // '?';
		$tries{$to}++;
		push @{ $answers{$to} }, $q->{provider_id} if ($q->{answered} // 0) == 200;
		my $name = ($to =~ /^\+1555(\d{7})$/) ? 'user ' . ($1 + 0) : '?';
		push @bad_body, $q->{body}
		  unless $q->{method} eq 'POST' && $q->{path} eq '/v19.0/1234567890/messages'
		  && ($q->{headers}{authorization} // '') eq 'Bearer test-token'
		  && $JSON->encode($b) eq $JSON->encode({
				messaging_product => 'whatsapp', recipient_type => 'individual', to => $to,
				type => 'text', text => { body => "Hi $name, your order for $to is ready" } });
	}
	is(scalar(@bad_body), 0, 'every send is body_template || {to, type, text} with {{name}} and {{phone}} filled in')
	  or diag(explain([ @bad_body[ 0 .. min(4, $#bad_body) ] ]));
	my $n500 = grep { ($_->{answered} // 0) == 500 } @$reqs;
	my @wrong = grep {
		my $r = $rcp{$_};
		@{ $answers{ $r->{phone} } // [] } != 1 || $answers{ $r->{phone} }[0] ne $r->{mid}
		  || $tries{ $r->{phone} } != $r->{attempts}
	} @ids;
	is(scalar(@wrong), 0,
		'each recipient got exactly one 200 from the provider, its provider_message_id is the id in it, '
		  . 'and sends.attempts counts its requests')
	  or diag(explain([ map { { %{ $rcp{$_} }, answers => $answers{ $rcp{$_}{phone} }, tries => $tries{ $rcp{$_}{phone} } } }
		  @wrong[ 0 .. min(4, $#wrong) ] ]));
	is(scalar(@$reqs), $NRECIPIENTS + $n500, "the provider got $NRECIPIENTS accepted sends and $n500 failed ones");
	cmp_ok($n500, '>', 0, "the provider failed $n500 requests, retried (up to "
		  . max(map { $_->{attempts} } values %rcp) . ' attempts for one recipient)');

	# The channel's rate limit: a burst of at most $RATE, then $RATE per second.
	my @t = sort { $a <=> $b } map { $_->{time} } @$reqs;
	my $span = $t[-1] - $t[0];
	my $floor = (@t - 2 * $RATE) / $RATE;
	ok($span >= $floor, sprintf('rate limit: %d requests at %d/s took %.2f s (at least %.2f s)',
		scalar(@t), $RATE, $span, $floor));
	my ($worst, $j) = (0, 0);
	for my $i (0 .. $#t)
	{
		$j++ while $j < $#t && $t[ $j + 1 ] < $t[$i] + 1;
		$worst = max($worst, $j - $i + 1);
	}
	cmp_ok($worst, '<=', 2 * $RATE + 10, "rate limit: at most $worst requests in any 1 s window");
}
is(q1("SELECT total_recipients || '|' || duplicates || '|' || rejected || '|' || (started_at IS NOT NULL)
              || '|' || (completed_at >= started_at)
         FROM revenue_engine.blasts WHERE id = $blast"),
	"$NRECIPIENTS|$NDUPS|" . scalar(@bad) . '|true|true', 'the blast row: totals, started and completed');
is(q1("SELECT count(*) FILTER (WHERE old_status = 'pending' AND new_status = 'sent' AND source = 'send'
                                AND message_id = r.provider_message_id) || '/' || count(*)
         FROM revenue_engine.status_history h
         JOIN revenue_engine.blast_recipients r ON r.tenant_id = h.tenant_id AND r.id = h.recipient_id
        WHERE h.blast_id = $blast"),
	"$NRECIPIENTS/$NRECIPIENTS", 'status_history: one pending -> sent row (source send) per recipient');

# ===========================================================================
# Callbacks

my %RANK = (sent => 1, delivered => 2, read => 3, played => 3, replied => 4);
my $ERRORS = [ { code => 131026, title => 'Message undeliverable', message => 'Message undeliverable',
		error_data => { details => 'Message Undeliverable.' } } ];

# A WhatsApp Cloud API callback of these status and message items, signed.
my $inbound_n = 0;
sub callback
{
	my ($items, $secret, $phone_number_id) = @_;
	my @statuses = map { $_->{item} } grep { $_->{kind} eq 'status' } @$items;
	my @messages = map { $_->{item} } grep { $_->{kind} eq 'message' } @$items;
	my @changes;
	# statuses and messages sometimes come as separate entries of one body
	my $split = @statuses && @messages && rand() < 0.3;
	my $meta = { display_phone_number => '15550009999', phone_number_id => $phone_number_id };
	for my $part ($split ? ([ \@statuses, [] ], [ [], \@messages ]) : ([ \@statuses, \@messages ]))
	{
		my %value = (messaging_product => 'whatsapp', metadata => $meta);
		$value{statuses} = $part->[0] if @{ $part->[0] };
		if (@{ $part->[1] })
		{
			$value{messages} = $part->[1];
			$value{contacts} = [ map { { profile => { name => 'Customer' }, wa_id => $_->{from} } } @{ $part->[1] } ];
		}
		push @changes, { id => '102290129340398', changes => [ { value => \%value, field => 'messages' } ] };
	}
	my $body = $JSON->encode({ object => 'whatsapp_business_account', entry => \@changes });
	my $sig = hmac_sha256_hex($body, $secret);
	$sig = uc $sig if rand() < 0.1;    # hex digits in either case
	my $name = rand() < 0.5 ? 'X-Hub-Signature-256' : 'x-hub-signature-256';
	my $headers = $JSON->encode({ $name => "sha256=$sig", 'Content-Type' => 'application/json',
			'User-Agent' => 'facebookexternalua' });
	return ($headers, $body);
}

sub status_item
{
	my ($mid, $phone, $status, $t) = @_;
	(my $digits = $phone) =~ s/\D//g;
	my %i = (id => $mid, status => $status, timestamp => "$t", recipient_id => $digits);
	if ($status eq 'sent' || $status eq 'delivered')
	{
		$i{conversation} = { id => "conv-$digits", origin => { type => 'marketing' } };
		$i{pricing} = { billable => JSON::PP::true, pricing_model => 'CBP', category => 'marketing' };
	}
	$i{errors} = $ERRORS if $status eq 'failed';
	return { kind => 'status', item => \%i, mid => $mid };
}

sub message_item
{
	my ($phone, $t, $context_mid) = @_;
	(my $digits = $phone) =~ s/\D//g;
	my %i = (from => $digits, id => 'wamid.IN' . ++$inbound_n, timestamp => "$t", type => 'text',
		text => { body => 'Yes please' });
	$i{context} = { from => '15550009999', id => $context_mid } if defined $context_mid;
	return { kind => 'message', item => \%i, mid => $i{id} };
}

# Deliver callbacks [ [headers, body, [items]], ... ] to channel $provider from
# $NCLIENTS psql processes at once, each call its own transaction.  A call that
# fails is sent again in the next round.  Returns { first_failures => [sqlstate...],
# left => calls never accepted, results => [ [call, [rows]] ] }.
sub deliver
{
	my ($provider, $calls, $label) = @_;
	my @todo = (0 .. $#$calls);
	my (@first_failures, %results);
	for my $round (1 .. $MAX_ROUNDS)
	{
		last unless @todo;
		my $t_round = Time::HiRes::time();
		my @share;
		push @{ $share[ $_ % $NCLIENTS ] }, $todo[$_] for 0 .. $#todo;
		my @h;
		for my $c (0 .. $#share)
		{
			my $file = "$tmp/$label.r$round.c$c";
			open my $fh, '>', "$file.sql" or die;
			for my $k (@{ $share[$c] })
			{
				my ($headers, $body) = @{ $calls->[$k] };
				print $fh "\\echo \@\@B $k\n",
				  'SELECT item, kind, coalesce(message_id, \'\'), coalesce(status, \'\'), result, coalesce(reason, \'\')',
				  " FROM revenue_engine.ingest_status_webhook('$provider', \$h\$$headers\$h\$::jsonb, \$b\$$body\$b\$);\n",
				  "\\echo \@\@E $k :SQLSTATE\n";
			}
			close $fh;
			push @h, [ $file, IPC::Run::start(
				[ 'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr('postgres'), '-f', "$file.sql" ],
				'<', \undef, '>', "$file.out", '2>', "$file.err") ];
		}
		my (%done, %state, %errors);
		for my $x (@h)
		{
			my ($file, $h) = @$x;
			$h->finish;
			my ($k, @rows);
			for my $line (split /\n/, slurp_file("$file.out"))
			{
				if ($line =~ /^\@\@B (\d+)$/) { ($k, @rows) = ($1); }
				elsif ($line =~ /^\@\@E (\d+) (\S+)$/)
				{
					$state{$1} = $2;
					if ($2 eq '00000') { $results{$1} = [@rows]; $done{$1} = 1; }
					undef $k;
				}
				elsif (defined $k) { push @rows, [ split /\|/, $line, 6 ]; }
			}
			for (split /\n/, slurp_file("$file.err"))
			{
				$errors{$1}++ if /(?:ERROR|FATAL|error):\s+(.*)/;
			}
		}
		note sprintf('%s round %d: %d calls, %d failed, %.1f s%s', $label, $round, scalar(@todo),
			scalar(grep { !$done{$_} } @todo), Time::HiRes::time() - $t_round,
			join('', map { "; $errors{$_} x $_" } sort keys %errors));
		@todo = grep { !$done{$_} } @todo;
		# after a crash, wait for the server to be back
		$node->poll_query_until('postgres', 'SELECT true') if @todo;
		# a call after a lost connection never ran: it failed too
		@first_failures = map { $state{$_} // 'not run (connection lost)' } @todo if $round == 1;
	}
	return { first_failures => \@first_failures, left => \@todo,
		results => [ map { [ $_, $results{$_} ] } sort { $a <=> $b } keys %results ] };
}

# ===========================================================================
# 2. Bad signatures change nothing: SQLSTATE 28000.

{
	my $r = $rcp{ $ids[0] };
	my ($headers, $body) = callback([ status_item($r->{mid}, $r->{phone}, 'read', int(time()) - 5) ],
		$SECRET, '1234567890');
	my $good = decode_json($headers)->{'X-Hub-Signature-256'} // decode_json($headers)->{'x-hub-signature-256'};
	my $wrong_sig = 'sha256=' . hmac_sha256_hex($body, $SECRET . 'x');
	my $tampered = $body =~ s/"read"/"seen"/r;
	for my $case (
		[ 'a signature made with another secret', qq({"X-Hub-Signature-256": "$wrong_sig"}), $body ],
		[ 'no X-Hub-Signature-256 header', '{"Content-Type": "application/json"}', $body ],
		[ 'a body changed after signing', qq({"X-Hub-Signature-256": "$good"}), $tampered ],
		[ 'a signature that is not hex', qq({"X-Hub-Signature-256": "sha256=xyz"}), $body ],
		[ 'the other channel\'s secret', qq({"X-Hub-Signature-256": "sha256=) . hmac_sha256_hex($body, $LATE_SECRET) . '"}', $body ])
	{
		my ($what, $h, $b) = @$case;
		my ($rc, $out, $err) = $node->psql('postgres',
			"SELECT * FROM revenue_engine.ingest_status_webhook('wa', \$h\$$h\$h\$::jsonb, \$b\$$b\$b\$);\n\\echo :SQLSTATE",
			on_error_stop => 0);
		is($out, '28000', "a callback with $what is refused with SQLSTATE 28000");
	}
	is(q1("SELECT status || '|' || (read_at IS NULL) FROM revenue_engine.blast_recipients WHERE id = $r->{id}")
		  . '|' . q1("SELECT count(*) FROM revenue_engine.status_history WHERE source = 'webhook'"),
		'sent|true|0', 'the refused callbacks changed nothing');
}

# ===========================================================================
# 3. The late blast: statuses come before the sends (its channel is held).

my %late;    # recipient id => { phone, mid, events => [...] }
my ($late_blast, @late_calls);
{
	my @phones = map { sprintf('+4470000%05d', $_) } 1 .. $NLATE;
	$late_blast = q1("SELECT blast_id FROM revenue_engine.create_blast('wa_late', 'e2e-late', recipients => '"
		  . encode_json([ map { { phone => $_, name => "late $_" } } @phones ]) . "', message => 'Hello {{name}}')");
	my $base = int(time()) - 120;
	for my $f (@{ rows("SELECT id, phone FROM revenue_engine.blast_recipients WHERE blast_id = $late_blast ORDER BY id") })
	{
		my ($id, $phone) = @$f;
		(my $mid = $phone) =~ s/\D//g;
		$mid = "wamid.L$mid";
		my $b = $base + int(rand(60));
		my @path = @{ (
			[qw(sent)], [qw(sent delivered)], [qw(sent delivered read)], [qw(sent failed)], [qw(sent read)]
		)[ rand 5 ] };
		my %t = (sent => $b + 1, failed => $b + 2, delivered => $b + 3, read => $b + 4);
		$late{$id} = { id => $id, phone => $phone, mid => $mid,
			events => [ map { status_item($mid, $phone, $_, $t{$_}) } @path ] };
	}
	my @items = shuffle(map { @{ $late{$_}{events} } } sort { $a <=> $b } keys %late);
	while (@items)
	{
		my @chunk = splice(@items, 0, 1 + int(rand(20)));
		push @late_calls, [ callback(\@chunk, $LATE_SECRET, '999'), \@chunk ];
	}
	is(q1("SELECT count(*) FILTER (WHERE status = 'pending' AND provider_message_id IS NULL)
	         FROM revenue_engine.blast_recipients WHERE blast_id = $late_blast"), $NLATE,
		"late blast: $NLATE recipients wait, pending, on the held channel");
}
my $late_res = deliver('wa_late', \@late_calls, 'late');
{
	my @r = map { @{ $_->[1] } } @{ $late_res->{results} };
	my $nitems = sum0(map { scalar @{ $_->{events} } } values %late);
	is(scalar(@{ $late_res->{first_failures} }) . '/' . scalar(@{ $late_res->{left} }), '0/0',
		'late blast: every early callback was accepted at once')
	  or diag(explain($late_res->{first_failures}));
	is(join(',', sort map { $_->[4] } @r), join(',', ('parked') x $nitems),
		"late blast: all $nitems statuses for message ids not landed yet are parked");
	# They are applied in the order they were parked (the 4 clients interleaved them).
	my %ev_of = map { my $l = $_; map { ("$l->{mid}:$_->{item}{status}" => $_) } @{ $l->{events} } } values %late;
	my $parked = rows('SELECT message_id, status FROM revenue_engine.status_parked ORDER BY id');
	my $order = 0;
	$_->{order} = $order++ for grep { defined } map { $ev_of{"$_->[0]:$_->[1]"} } @$parked;
	is(scalar(@$parked) . '/' . $order, "$nitems/$nitems", 'late blast: status_parked holds each of them');
}

# ===========================================================================
# 4. Callbacks for every recipient of the blast, from 4 clients at once.

# Each recipient's story at the provider.  Times rise along the story, and
# start after every send's sent_at, so a webhook "sent" only repeats it.
my $T0 = 2 + int(max(map { $_->{sent_at} } values %rcp));
my @OUTCOMES = (
	[ sent_only       => 12, [qw(sent)] ],
	[ delivered       => 22, [qw(sent delivered)] ],
	[ read            => 18, [qw(sent delivered read)] ],
	[ read_no_deliver => 4,  [qw(sent read)] ],
	[ played          => 2,  [qw(sent delivered played)] ],
	[ failed          => 10, [qw(sent failed)] ],
	[ failed_only     => 3,  [qw(failed)] ],
	[ failed_then_ok  => 4,  [qw(sent failed delivered)] ],
	[ reply_context   => 14, [qw(sent delivered read reply_context)] ],
	[ reply_phone     => 11, [qw(sent delivered read reply_phone)] ]);
my $weights = sum0(map { $_->[1] } @OUTCOMES);
my (@events, %by_inbound, %by_mid, %outcome_count);
for my $id (@ids)
{
	my $r = $rcp{$id};
	$by_mid{ $r->{mid} } = $id;
	my $pick = rand($weights);
	my $o = $OUTCOMES[0];
	for (@OUTCOMES) { $o = $_; last if ($pick -= $_->[1]) < 0; }
	$r->{outcome} = $o->[0];
	$outcome_count{ $o->[0] }++;
	my $b = $T0 + int(rand(30));
	my %t = (sent => $b + 1, failed => $b + 2, delivered => $b + 3, read => $b + 4, played => $b + 4,
		reply_context => $b + 5, reply_phone => $b + 5);
	my @ev;
	for my $s (@{ $o->[2] })
	{
		if ($s =~ /^reply_(\w+)/)
		{
			my $e = message_item($r->{phone}, $t{$s}, $1 eq 'context' ? $r->{mid} : undef);
			$by_inbound{ $e->{mid} } = $id;
			push @ev, $e;
			$r->{t}{replied} = $t{$s};
		}
		else
		{
			push @ev, status_item($r->{mid}, $r->{phone}, $s, $t{$s});
			$r->{t}{ $s eq 'played' ? 'read' : $s } = $t{$s};
		}
	}
	$r->{events} = \@ev;

	# What the rules make of it: the highest stage reached, failed only if
	# nothing was delivered; each stage stamped with the earliest report of
	# it or of a later stage.
	my %has = map { $_ => 1 } @{ $o->[2] };
	my $top = max(1, map { $RANK{ $_ =~ /^reply/ ? 'replied' : $_ } // 0 } @{ $o->[2] });
	$r->{expect} = ($has{failed} && $top < 2) ? 'failed' : (qw(pending sent delivered read replied))[$top];
	for my $stage (qw(delivered read replied))
	{
		my @later = grep { $RANK{$_} >= $RANK{$stage} && $_ ne 'played' && $_ ne 'sent' && defined $r->{t}{$_} }
		  qw(delivered read replied);
		$r->{expect_at}{$stage} = @later ? min(map { $r->{t}{$_} } @later) : undef;
	}
}
note 'outcomes: ' . join(', ', map { "$_ $outcome_count{$_}" } sort keys %outcome_count);
push @events, @{ $rcp{$_}{events} } for @ids;
my $nunique = scalar(@events);
push @events, map { $events[ rand $nunique ] } 1 .. int($nunique / 10);    # duplicates
@events = shuffle(@events);
my @calls;
while (@events)
{
	my @chunk = splice(@events, 0, 1 + int(rand(50)));
	push @calls, [ callback(\@chunk, $SECRET, '1234567890'), \@chunk ];
}
my $nitems = sum0(map { scalar @{ $_->[2] } } @calls);
note sprintf('%d callbacks with %d items (%d events + %d duplicates)', scalar(@calls), $nitems, $nunique,
	$nitems - $nunique);

# The held channel is let go as the callbacks start: its ids land meanwhile.
q1("SELECT revenue_engine.set_channel_enabled('wa_late', true)");
my $t_cb = Time::HiRes::time();
my $res = deliver('wa', \@calls, 'main');
note sprintf('callbacks ingested in %.1f s', Time::HiRes::time() - $t_cb);

{
	my %why;
	$why{$_}++ for @{ $res->{first_failures} };
	is(scalar(@{ $res->{first_failures} }), 0,
		'no ingest_status_webhook call failed (' . scalar(@calls) . " calls from $NCLIENTS clients)")
	  or diag('failed calls by SQLSTATE: ' . join(', ', map { "$_: $why{$_}" } sort keys %why) . '; '
		  . 'deadlocks in the server log, by the relation waited on: ' . join(', ', do {
			  my (%rel, $in_deadlock);
			  for (split /\n/, slurp_file($node->logfile))
			  {
				  $in_deadlock = /ERROR:  deadlock detected/ ? 1 : 0 if /ERROR:/;
				  if ($in_deadlock && /CONTEXT:  while \w+ tuple \S+ in relation "(\w+)"/) { $rel{$1}++; $in_deadlock = 0; }
			  }
			  map { "$_ $rel{$_}" } sort keys %rel }));
	is(scalar(@{ $res->{left} }), 0, "every callback was accepted within $MAX_ROUNDS tries");
}

# Every item of every accepted call has its result row.
my (%applied, %result_count, @row_mismatch);
for my $x (@{ $res->{results} })
{
	my ($k, $rows) = @$x;
	my @want = sort map { "$_->{kind}:$_->{mid}" } @{ $calls[$k][2] };
	my @got = sort map { "$_->[1]:$_->[2]" } @$rows;
	push @row_mismatch, $k unless "@want" eq "@got";
	for my $row (@$rows)
	{
		$result_count{ $row->[4] }++;
		next unless $row->[4] eq 'applied';
		my $id = $row->[1] eq 'message' ? $by_inbound{ $row->[2] } : $by_mid{ $row->[2] };
		$applied{ $id // 'unknown' }++;
	}
}
is(scalar(@row_mismatch), 0, 'each call returned one row per item, naming its message id');
note 'results: ' . join(', ', map { "$_ $result_count{$_}" } sort keys %result_count);
is(join(',', grep { !/^(applied|duplicate|stale)$/ } sort keys %result_count), '',
	'every item was applied, a duplicate or stale: none rejected, unmatched or parked');

# Closed sales for a few who replied, after every callback's time (those may
# be ahead of the clock: a sale closed earlier would pull them back).
my @closers = (grep { $rcp{$_}{expect} eq 'replied' } @ids)[ 0 .. 4 ];
my $T_CLOSED = $T0 + 40;
is(q1('SELECT string_agg(revenue_engine.mark_closed(phone, amount, to_timestamp(' . $T_CLOSED
		  . '))::text, \',\' ORDER BY amount) FROM (VALUES '
		  . join(', ', map { "('$rcp{ $closers[$_] }{phone}', " . (100 + $_) . ')' } 0 .. $#closers) . ') v(phone, amount)'),
	join(',', @closers), 'mark_closed closes the latest recipient of each of 5 phones that replied');
$rcp{$_}{expect} = 'closed' for @closers;

# ===========================================================================
# 5. Every recipient as the rules say.

my %db;
for my $f (@{ rows(qq{
	SELECT id, status, coalesce(extract(epoch FROM sent_at)::text, ''),
	       coalesce(extract(epoch FROM delivered_at)::text, ''), coalesce(extract(epoch FROM read_at)::text, ''),
	       coalesce(extract(epoch FROM replied_at)::text, ''), coalesce(extract(epoch FROM failed_at)::text, ''),
	       coalesce(error::text, ''), coalesce(extract(epoch FROM closed_at)::text, ''), coalesce(amount::text, '')
	  FROM revenue_engine.blast_recipients WHERE blast_id = $blast}) })
{
	my %d;
	@d{qw(id status sent_at delivered read replied failed_at error closed amount)} = @$f;
	$db{ $d{id} } = \%d;
}
{
	my @wrong = grep { ($db{$_}{status} // '') ne $rcp{$_}{expect} } @ids;
	is(scalar(@wrong), 0, 'every recipient has the status the rules give (highest stage; failed only before delivered)')
	  or diag(explain([ map { "$rcp{$_}{outcome}: expected $rcp{$_}{expect}, got $db{$_}{status}" }
		  @wrong[ 0 .. min(9, $#wrong) ] ]));

	# an epoch from the database ('' for NULL) is the expected one (undef: NULL)
	my $same = sub {
		my ($got, $want) = @_;
		return defined $want ? $got ne '' && abs($got - $want) < 1e-6 : $got eq '';
	};
	my @bad_t = grep {
		my ($r, $d) = ($rcp{$_}, $db{$_});
		!$same->($d->{sent_at}, $r->{sent_at})
		  || !$same->($d->{delivered}, $r->{expect_at}{delivered})
		  || !$same->($d->{read}, $r->{expect_at}{read})
		  || !$same->($d->{replied}, $r->{expect_at}{replied})
	} @ids;
	is(scalar(@bad_t), 0, 'every stage is stamped with the earliest report of it or a later stage; sent_at is the send\'s')
	  or diag(explain([ map { { outcome => $rcp{$_}{outcome}, expect => $rcp{$_}{expect_at}, got => $db{$_} } }
		  @bad_t[ 0 .. min(4, $#bad_t) ] ]));

	my @bad_f = grep {
		my ($r, $d) = ($rcp{$_}, $db{$_});
		$r->{expect} eq 'failed'
		  && ($d->{failed_at} eq '' || abs($d->{failed_at} - $r->{t}{failed}) > 1e-6
			|| !eval { $JSON->encode(decode_json($d->{error})) eq $JSON->encode($ERRORS) })
	} @ids;
	is(scalar(@bad_f), 0, 'every failed recipient has failed_at and the provider\'s errors')
	  or diag(explain([ map { $db{$_} } @bad_f[ 0 .. min(4, $#bad_f) ] ]));
	is(join(',', map { "$db{ $closers[$_] }{closed}:$db{ $closers[$_] }{amount}" } 0 .. $#closers),
		join(',', map { "$T_CLOSED.000000:" . (100 + $_) } 0 .. $#closers), 'closed recipients have closed_at and the amount');
}

# ===========================================================================
# 6. The funnel: counters = a scan = what the outcomes say.

my %expect = (total => $NRECIPIENTS);
for my $id (@ids)
{
	my $e  = $rcp{$id}{expect};
	my $rk = { sent => 1, delivered => 2, read => 3, replied => 4, closed => 5, failed => 1 }->{$e};
	$expect{sent}++;
	$expect{delivered}++ if $rk >= 2;
	$expect{read}++      if $rk >= 3;
	$expect{replied}++   if $rk >= 4;
	$expect{closed}++    if $rk >= 5;
	$expect{failed}++    if $e eq 'failed';
	$expect{"at_$e"}++;
}
my @stages = qw(total sent delivered read replied closed failed);
my $expect_funnel = join('|', map { $expect{$_} // 0 } @stages);
my $expect_stuck = join(',', map { "$_=" . ($expect{"at_$_"} // 0) } qw(pending sent delivered read replied closed failed));

sub scan_funnel
{
	my ($b) = @_;
	return q1("SELECT count(*) || '|' || count(sent_at) || '|' || count(delivered_at) || '|' || count(read_at)
	                  || '|' || count(replied_at) || '|' || count(closed_at) || '|' || count(*) FILTER (WHERE status = 'failed')
	             FROM revenue_engine.blast_recipients WHERE blast_id = $b");
}
sub view_funnel
{
	my ($b) = @_;
	return q1("SELECT " . join(" || '|' || ", @stages) . " FROM revenue_engine.blast_funnel WHERE blast_id = $b");
}
sub scan_stuck
{
	my ($b) = @_;
	return q1("SELECT string_agg(s || '=' || (SELECT count(*) FROM revenue_engine.blast_recipients r
	                                            WHERE r.blast_id = $b AND r.status = s), ',' ORDER BY o)
	             FROM unnest('{pending,sent,delivered,read,replied,closed,failed}'::text[]) WITH ORDINALITY AS u(s, o)");
}
sub view_stuck
{
	my ($b) = @_;
	return q1("SELECT string_agg(stage || '=' || stuck, ',' ORDER BY CASE stage WHEN 'pending' THEN 1 WHEN 'sent' THEN 2
	             WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 WHEN 'replied' THEN 5 WHEN 'closed' THEN 6 ELSE 7 END)
	             FROM revenue_engine.blast_stuck WHERE blast_id = $b");
}

note "expected funnel (total|sent|delivered|read|replied|closed|failed): $expect_funnel";
is(scan_funnel($blast), $expect_funnel, 'scan of blast_recipients = the funnel the outcomes give');
is(view_funnel($blast), scan_funnel($blast), 'blast_funnel = the scan');
is(scan_stuck($blast), $expect_stuck, 'scan of statuses = what the outcomes give');
is(view_stuck($blast), scan_stuck($blast), 'blast_stuck = the scan');
is(q1("SELECT blasts || '|' || total || '|' || sent || '|' || delivered || '|' || read || '|' || replied
              || '|' || closed || '|' || failed FROM revenue_engine.funnel_by_tag('e2e-campaign')"),
	"1|$expect_funnel", 'funnel_by_tag sums the same');

# ===========================================================================
# 7. status_history: one row per change, chained.

{
	my (%chain, $nwebhook, @broken);
	# rows of items that changed nothing (result duplicate or stale) keep the provider's data; the chain is the rest
	for my $f (@{ rows("SELECT recipient_id, old_status, new_status, source FROM revenue_engine.status_history
	                     WHERE blast_id = $blast AND result = 'applied' ORDER BY id") })
	{
		push @{ $chain{ $f->[0] } }, $f;
		$nwebhook++ if $f->[3] eq 'webhook';
	}
	for my $id (@ids)
	{
		my @h = @{ $chain{$id} // [] };
		my $prev = 'pending';
		my $ok = @h >= 1 && $h[0][3] eq 'send';
		for my $row (@h)
		{
			$ok &&= $row->[1] eq $prev && $row->[2] ne $row->[1];
			$prev = $row->[2];
		}
		$ok &&= $prev eq $rcp{$id}{expect};
		$ok &&= (grep { $_->[3] eq 'webhook' } @h) == ($applied{$id} // 0);
		push @broken, $id unless $ok;
	}
	is(scalar(@broken), 0, 'each recipient\'s history runs pending -> sent (send) -> ... -> its status, '
		  . 'one row per change, a webhook row per item applied')
	  or diag(explain([ map { { outcome => $rcp{$_}{outcome}, expect => $rcp{$_}{expect}, applied => $applied{$_},
			history => $chain{$_} } } @broken[ 0 .. min(4, $#broken) ] ]));
	is($nwebhook // 0, $result_count{applied} // 0,
		'status_history has exactly as many webhook rows as items were applied');
	is(q1("SELECT count(*) FROM revenue_engine.status_history WHERE blast_id = $blast AND result = 'applied'"),
		$NRECIPIENTS + ($result_count{applied} // 0) + @closers,
		'status_history: send rows + applied items + closes, nothing else');
	is(q1("SELECT count(*) FROM revenue_engine.status_history
	        WHERE blast_id = $blast AND (result <> 'applied') <> (old_status = new_status AND source = 'webhook')"),
		'0', 'status_history: every other row is a webhook item that changed no status');
	ok(q1("SELECT count(*) FROM revenue_engine.status_history WHERE blast_id = $blast AND result <> 'applied'")
		  <= ($result_count{duplicate} // 0) + ($result_count{stale} // 0),
		'status_history: at most one row per duplicate or stale item (a repeated item is kept once)');
}

# ===========================================================================
# 8. The late blast: parked statuses applied once its ids landed.

ok($node->poll_query_until('postgres', "SELECT status FROM revenue_engine.blasts WHERE id = $late_blast", 'completed'),
	'late blast: completed once its channel is enabled');
is(q1('SELECT count(*) FROM revenue_engine.status_parked'), '0', 'status_parked is empty');
{
	my %exp = (total => $NLATE);
	my @wrong;
	my $db = rows(qq{SELECT r.id, r.status, r.provider_message_id, extract(epoch FROM r.sent_at),
	                        extract(epoch FROM s.sent_at), coalesce(r.error::text, ''),
	                        (SELECT count(*) FROM revenue_engine.status_history h
	                          WHERE h.recipient_id = r.id AND h.result = 'applied')
	                   FROM revenue_engine.blast_recipients r
	                   JOIN revenue_engine.sends s ON s.tenant_id = r.tenant_id AND s.recipient_id = r.id
	                  WHERE r.blast_id = $late_blast});
	for my $f (@$db)
	{
		my ($id, $status, $mid, $sent_at, $send_at, $error, $nhist) = @$f;
		my $l = $late{$id};
		# the statuses in the order they were parked, after the send's sent
		my ($st, $reached, $changes) = ('sent', 1, 1);
		for my $e (sort { $a->{order} <=> $b->{order} } @{ $l->{events} })
		{
			my $s = $e->{item}{status};
			my $new = $st;
			if ($s eq 'failed') { $new = 'failed' if $st ne 'failed' && $reached < 2; }
			else
			{
				my $rk = $RANK{$s};
				$new = ($st eq 'failed' && $rk <= $reached) ? 'failed' : (qw(pending sent delivered read))[ max($reached, $rk) ];
				$reached = max($reached, $rk);
			}
			$changes++ if $new ne $st;
			$st = $new;
		}
		# statuses dated before the send do not move sent_at back
		my $want_sent = $send_at;
		my $want_error = $st eq 'failed' ? $JSON->encode($ERRORS) : '';
		$error = $JSON->encode(decode_json($error)) if $error ne '';
		push @wrong, "$id: $status/$mid/$sent_at/$nhist/$error, expected $st/$l->{mid}/$want_sent/$changes/$want_error"
		  unless $status eq $st && $mid eq $l->{mid} && abs($sent_at - $want_sent) < 1e-6 && $nhist == $changes
		  && $error eq $want_error;
		$exp{sent}++;
		$exp{delivered}++ if $reached >= 2;
		$exp{read}++      if $reached >= 3;
		$exp{failed}++    if $st eq 'failed';
	}
	is(scalar(@$db), $NLATE, "late blast: $NLATE recipients");
	is(scalar(@wrong), 0, 'late blast: each recipient has the message id the provider gave and the parked statuses '
		  . 'applied in the order they came: status, error, sent_at the send\'s, one history row per change')
	  or diag(explain([ @wrong[ 0 .. min(9, $#wrong) ] ]));
	is(view_funnel($late_blast), scan_funnel($late_blast), 'late blast: blast_funnel = the scan');
	is(scan_funnel($late_blast), join('|', map { $exp{$_} // 0 } @stages), 'late blast: the scan = the expected funnel');
	is(view_stuck($late_blast), scan_stuck($late_blast), 'late blast: blast_stuck = the scan');
}

# ===========================================================================
# 9. What was recorded of the callbacks is readable and is the item.

{
	# README: history keeps "the raw item as metadata"
	my ($rc, $out, $err) = $node->psql('postgres', q{
		SELECT count(*) FILTER (WHERE NOT coalesce(jsonb_typeof(metadata) = 'object'
		                                           AND (metadata ->> 'id' = message_id OR metadata ? 'from'), false))
		       || '/' || count(*) || E'\n'
		       || coalesce(string_agg(pg_catalog.format('%s %s -> %s, blast %s: %s', message_id, old_status, new_status,
		                                                blast_id, left(metadata::text, 120)), E'\n')
		                     FILTER (WHERE NOT coalesce(jsonb_typeof(metadata) = 'object'
		                                                AND (metadata ->> 'id' = message_id OR metadata ? 'from'), false)), '')
		  FROM revenue_engine.status_history WHERE source = 'webhook'});
	my ($counts, @offending) = split /\n/, $out // '';
	ok($rc == 0 && ($counts // '') =~ m{^0/\d+$},
		'every webhook history row\'s metadata is the callback item (a JSON object with its id)')
	  or diag("psql exit $rc; bad/all: " . ($counts // '') . "; stderr: $err\n"
		  . join("\n", @offending[ 0 .. min(9, $#offending) ]));
}

my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|PANIC/, 'no server process crashed');
note sprintf('run time %.1f s', Time::HiRes::time() - $t_start);

$node->stop;
done_testing();
