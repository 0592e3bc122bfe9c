# Webhook and send delivery by the background worker, against the controllable
# receiver of test/receiver (one receiver process per scenario, so the
# scenarios run at the same time and each one's request count is its own):
#
#  1. end to end: a milestone crossed by track_daily_usage reaches the receiver
#     once, signed (Standard Webhooks), with the documented payload, quickly;
#  2. every failure class follows the delivery state machine (retry with the
#     schedule and jitter, Retry-After, dead on 4xx, 410 disables, redirects
#     not followed, timeouts, broken and garbage answers, huge bodies capped);
#  3. redrive brings a dead delivery back;
#  4. the SSRF guard refuses internal addresses before connecting (second node
#     with revenue_engine.http_allow_private off, and a reload on the first);
#  5. sends: idempotency key, template || payload, provider message id;
#  6. an endpoint's rate limit;
#  7. events no endpoint subscribes to get no delivery; deliver_pending_since.
use strict;
use warnings;

use IPC::Run;
use HTTP::Tiny;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX ();
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root      = $ENV{TESTDIR} // '.';
require "$root/test/lib/Receiver.pm";
my $rx_script = "$root/test/receiver/receiver.py";
my $tmp       = PostgreSQL::Test::Utils::tempdir;
my $SECRET    = 'whsec_' . encode_base64(join('', map { chr(($_ * 37 + 11) % 256) } 1 .. 24), '');
my $JSON      = JSON::PP->new->canonical;
my $http      = Receiver::http();

# ---------------------------------------------------------------------------
# Receivers

my %rx;

sub start_receiver
{
	my ($name) = @_;
	my $r = {
		name      => $name,
		port_file => "$tmp/rx_$name.port",
		log       => "$tmp/rx_$name.jsonl"
	};
	$r->{h} = IPC::Run::start(
		[
			'python3', $rx_script, '--port', '0', '--port-file', $r->{port_file},
			'--log', $r->{log}, '--secret', $SECRET
		],
		'<', \undef, '>', "$tmp/rx_$name.out", '2>', "$tmp/rx_$name.err");
	$rx{$name} = $r;
	return $r;
}

sub wait_receiver
{
	my ($r) = @_;
	for (1 .. 1200)
	{
		last if -s $r->{port_file};
		usleep(50_000);
	}
	die "receiver $r->{name} did not start: " . slurp_file("$tmp/rx_$r->{name}.err")
	  unless -s $r->{port_file};
	chomp(my $port = slurp_file($r->{port_file}));
	$r->{port} = $port;
	$r->{base} = "http://127.0.0.1:$port";
	$r->{url}  = "$r->{base}/hook";
	return $r;
}

sub rx_call
{
	my ($r, $method, $path, $obj) = @_;
	my $res = $http->request(
		$method,
		"$r->{base}/_control/$path",
		defined $obj
		? { content => encode_json($obj), headers => { 'content-type' => 'application/json' } }
		: {});
	die "receiver $r->{name}: $method $path: $res->{status} $res->{content}"
	  unless $res->{success};
	return decode_json($res->{content});
}
sub rx_mode     { rx_call($_[0], 'POST', 'mode', $_[1]) }
sub rx_stats    { rx_call($_[0], 'GET',  'stats') }
sub rx_requests { rx_call($_[0], 'GET',  'requests?since=0') }

sub stop_receivers
{
	for my $r (values %rx)
	{
		next unless $r->{h};
		eval { $r->{h}->kill_kill(grace => 5); };
		delete $r->{h};
	}
}
END { stop_receivers(); }

my @rx_names = qw(e2e seq r500 r429 r429d bytes r400 r410 r302 stall close garbage slow huge
  sends rate orphan ssrf pool fresh);
start_receiver($_) for @rx_names;
wait_receiver($rx{$_}) for @rx_names;
ok(1, scalar(@rx_names) . ' receivers listen');

# ---------------------------------------------------------------------------
# Nodes: "main" lets deliveries reach 127.0.0.1, "guard" keeps the default.

sub new_node
{
	my ($name, $allow_private) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'revenue_engine'
max_worker_processes = 16
timezone = 'UTC'
revenue_engine.http_allow_private = $allow_private
EOC
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION revenue_engine');
	return $node;
}

my $node  = new_node('delivery_main',  'on');
my $guard = new_node('delivery_guard', 'off');

sub worker_ready
{
	my ($n) = @_;
	return $n->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM revenue_engine.workers
		   WHERE database_name = current_database() AND state IN ('idle', 'delivering', 'maintenance')});
}
ok(worker_ready($node),  'CREATE EXTENSION started a delivery worker (main node)');
ok(worker_ready($guard), 'CREATE EXTENSION started a delivery worker (guard node)');
my $worker_pid = $node->safe_psql('postgres',
	'SELECT pid FROM revenue_engine.workers WHERE database_name = current_database()');

sub q1 { my ($n, $sql) = @_; return $n->safe_psql('postgres', $sql); }

sub create_endpoint
{
	my ($n, $name, $url, $types, %o) = @_;
	my @args = (
		"'$name'", "'$url'",
		'event_types => ' . (defined $types ? "'{$types}'" : 'NULL'),
		"signing_secret => '$SECRET'");
	push @args, "$_ => $o{$_}" for sort keys %o;
	return q1($n, 'SELECT revenue_engine.create_endpoint(' . join(', ', @args) . ')');
}

# The attempt log of an endpoint, oldest first.
sub attempts
{
	my ($n, $ep) = @_;
	my $out = q1($n, qq{
		SELECT a.attempt, extract(epoch FROM a.started_at), coalesce(a.status_code::text, ''),
		       a.outcome, a.latency_ms, coalesce(length(a.response_body), -1),
		       coalesce(a.event_id::text, ''), coalesce(a.error, '')
		  FROM revenue_engine.delivery_attempts a
		  JOIN revenue_engine.endpoints e ON e.tenant_id = a.tenant_id AND e.id = a.endpoint_id
		 WHERE a.kind = 'event' AND e.name = '$ep'
		 ORDER BY a.id});
	my @rows;
	for my $line (grep { length } split /\n/, $out)
	{
		my @f = split /\|/, $line, 8;
		push @rows,
		  {
			attempt  => $f[0],
			t        => $f[1],
			status   => $f[2],
			outcome  => $f[3],
			latency  => $f[4],
			body_len => $f[5],
			event_id => $f[6],
			error    => $f[7]
		  };
	}
	return \@rows;
}

# status|attempts|last_status|last_error of one delivery
sub delivery
{
	my ($n, $ep, $event) = @_;
	return q1($n, qq{
		SELECT d.status || '|' || d.attempts || '|' || coalesce(d.last_status::text, '')
		       || '|' || coalesce(d.last_error, '')
		  FROM revenue_engine.deliveries d
		  JOIN revenue_engine.endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
		 WHERE e.name = '$ep' AND d.event_id = '$event'});
}

sub wait_delivery
{
	my ($n, $ep, $event, $status) = @_;
	return $n->poll_query_until('postgres', qq{
		SELECT d.status FROM revenue_engine.deliveries d
		  JOIN revenue_engine.endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
		 WHERE e.name = '$ep' AND d.event_id = '$event'}, $status);
}

sub wait_attempts
{
	my ($n, $ep, $count) = @_;
	return $n->poll_query_until('postgres', qq{
		SELECT count(*) >= $count FROM revenue_engine.delivery_attempts a
		  JOIN revenue_engine.endpoints e ON e.tenant_id = a.tenant_id AND e.id = a.endpoint_id
		 WHERE a.kind = 'event' AND e.name = '$ep'});
}

sub event_status
{
	my ($n, $event) = @_;
	return q1($n, "SELECT status FROM revenue_engine.webhook_events WHERE id = '$event'");
}

sub worker_pid
{
	my ($n) = @_;
	return q1($n, 'SELECT pid FROM revenue_engine.workers WHERE database_name = current_database()');
}

# Every request a receiver got carries this event's id, a valid signature,
# and goes to /hook.
sub requests_are_for
{
	my ($r, $event, $what) = @_;
	my $reqs = rx_requests($r);
	my @bad = grep {
		!defined $_->{webhook_id} || $_->{webhook_id} ne $event
		  || !$_->{verified} || $_->{path} ne '/hook' || $_->{method} ne 'POST'
	} @$reqs;
	is(scalar(@bad), 0,
		"$what: every request is a signed POST to /hook with webhook-id = the event id")
	  or diag(explain(\@bad));
	return $reqs;
}

# ===========================================================================
# 1. End to end: a milestone crossed by track_daily_usage.

create_endpoint($node, 'ep_e2e', $rx{e2e}{url}, 'milestone_reached');
my $user = '11111111-1111-4111-8111-111111111111';
q1($node, "SELECT revenue_engine.track_daily_usage('$user', 'reply', 1)");
my $e2e_event = q1($node, qq{
	SELECT id FROM revenue_engine.webhook_events
	 WHERE user_id = '$user' AND event_type = 'milestone_reached'});
like($e2e_event, qr/^[0-9a-f-]{36}$/, 'crossing milestone 1 wrote one milestone_reached event');

ok(wait_delivery($node, 'ep_e2e', $e2e_event, 'sent'), 'e2e: the delivery becomes sent');
is(event_status($node, $e2e_event), 'sent', 'e2e: webhook_events.status is sent');
{
	my $reqs = rx_requests($rx{e2e});
	is(scalar(@$reqs), 1, 'e2e: the receiver got exactly one request');
	my $req = $reqs->[0] // {};
	is($req->{method}, 'POST', 'e2e: the request is a POST');
	ok($req->{verified}, 'e2e: its Standard Webhooks signature verifies (receiver: verified)')
	  or diag("verify_error: " . ($req->{verify_error} // 'none'));
	is($req->{headers}{'webhook-id'}, $e2e_event, 'e2e: header webhook-id equals the event id');
	like($req->{headers}{'webhook-timestamp'} // '', qr/^\d{10}$/,
		'e2e: header webhook-timestamp is a Unix time');
	like($req->{headers}{'webhook-signature'} // '', qr/^v1,[A-Za-z0-9+\/]{43}=$/,
		'e2e: header webhook-signature is one v1 signature');
	like($req->{headers}{'content-type'} // '', qr{^application/json}, 'e2e: content type is JSON');
	my $body = eval { $JSON->decode($req->{body}) } // {};
	is_deeply([ sort keys %$body ], [qw(event id metadata timestamp user)],
		'e2e: the body has exactly the keys id, event, timestamp, user, metadata');
	is($body->{id},    $e2e_event,          'e2e: body id is the event id');
	is($body->{event}, 'milestone_reached', 'e2e: body event is milestone_reached');
	like($body->{timestamp} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/, 'e2e: body timestamp is ISO 8601');
	is(ref $body->{metadata}, 'HASH', 'e2e: body metadata is an object');
	is($body->{metadata}{milestone_value}, 1, 'e2e: metadata.milestone_value is 1');
	is($body->{metadata}{usage_type}, 'reply', 'e2e: metadata.usage_type is reply');

	my $created = q1($node,
		"SELECT extract(epoch FROM created_at) FROM revenue_engine.webhook_events WHERE id = '$e2e_event'");
	my $latency = ($req->{time} // 1e12) - $created;
	note sprintf('e2e: event created -> received in %.0f ms', $latency * 1000);
	cmp_ok($latency, '<', 2.0, 'e2e: received less than 2 s after the transaction started');
	cmp_ok($latency, '>', -0.5, 'e2e: received after the event was created (same clock)');
	my $st = rx_stats($rx{e2e});
	is($st->{duplicates}, 0, 'e2e: no duplicate webhook-id');
}

# ===========================================================================
# 2, 3, 5, 6, 7 run at the same time: endpoints, receiver modes, then events.

for my $t (qw(t_seq500 t_500 t_429 t_429d t_bytes t_400 t_410 t_302 t_stall t_close t_garbage
	t_slow t_huge t_rate t_orphan t_other))
{
	q1($node, "SELECT revenue_engine.register_event_type('$t')");
}

my $fast = q('{1 second,2 seconds}');
my $again = q('{2 seconds,2 seconds,2 seconds,2 seconds,2 seconds}');
create_endpoint($node, 'ep_seq500', $rx{seq}{url},  't_seq500', retry_schedule => $fast);
create_endpoint($node, 'ep_500',    $rx{r500}{url}, 't_500',    retry_schedule => $fast);
create_endpoint($node, 'ep_429',    $rx{r429}{url}, 't_429',    retry_schedule => q('{1 second}'));
create_endpoint($node, 'ep_429d',   $rx{r429d}{url}, 't_429d',  retry_schedule => q('{1 second}'));
create_endpoint($node, 'ep_bytes',  $rx{bytes}{url}, 't_bytes',  retry_schedule => $fast);
create_endpoint($node, 'ep_400',    $rx{r400}{url}, 't_400',    retry_schedule => $fast);
create_endpoint($node, 'ep_410',    $rx{r410}{url}, 't_410',    retry_schedule => $fast);
create_endpoint($node, 'ep_302',    $rx{r302}{url}, 't_302',    retry_schedule => q('{1 second}'));
create_endpoint($node, 'ep_stall',  $rx{stall}{url}, 't_stall', retry_schedule => $again,
	timeout_ms => 500);
create_endpoint($node, 'ep_close',   $rx{close}{url},   't_close',   retry_schedule => $again);
create_endpoint($node, 'ep_garbage', $rx{garbage}{url}, 't_garbage', retry_schedule => $again);
create_endpoint($node, 'ep_slow', $rx{slow}{url}, 't_slow', retry_schedule => $again,
	timeout_ms => 1000);
create_endpoint($node, 'ep_huge', $rx{huge}{url}, 't_huge', retry_schedule => $fast);
create_endpoint($node, 'ep_rate', $rx{rate}{url}, 't_rate', rate_limit => 5,
	rate_period => q('second'));
create_endpoint($node, 'ep_other', $rx{orphan}{url}, 't_other');

rx_mode($rx{seq},  { mode => 'sequence', statuses => [ 500, 500, 200 ] });
rx_mode($rx{r500}, { mode => 'status', status => 500 });
rx_mode($rx{r429}, { mode => 'sequence', statuses => [ 429, 200 ], retry_after => 3 });
# Retry-After as an HTTP-date 4 s ahead (whole seconds: the wait is 3 to 4 s)
rx_mode($rx{r429d}, { mode => 'sequence', statuses => [ 429, 200 ],
	retry_after => POSIX::strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime(time() + 4)) });
rx_mode($rx{r400}, { mode => 'status', status => 400 });
# UTF-8 kept, invalid bytes and NUL escaped
rx_mode($rx{bytes}, { mode => 'status', status => 400,
	body_base64 => encode_base64("caf\xc3\xa9 \xe2\x9c\x93 \xff\xfe\x00 \xc3 end", '') });
rx_mode($rx{r410}, { mode => 'status', status => 410 });
rx_mode($rx{r302}, { mode => 'redirect', location => "$rx{r302}{base}/elsewhere" });
rx_mode($rx{stall},   { mode => 'stall', seconds => 4 });
rx_mode($rx{close},   { mode => 'close' });
rx_mode($rx{garbage}, { mode => 'garbage' });
rx_mode($rx{slow},    { mode => 'slow', seconds => 4, interval => 0.2 });
rx_mode($rx{huge},    { mode => 'huge', bytes => 5_000_000 });
rx_mode($rx{sends},   { mode => 'provider' });

# One transaction: one event per failure scenario.
my %ev;
{
	my $out = q1($node, q{
		SELECT t, revenue_engine.enqueue_event(gen_random_uuid(), t, jsonb_build_object('scenario', t))
		  FROM unnest(ARRAY['t_seq500', 't_500', 't_429', 't_429d', 't_bytes', 't_400', 't_410', 't_302', 't_stall',
		                    't_close', 't_garbage', 't_slow', 't_huge']) t});
	for my $line (split /\n/, $out)
	{
		my ($t, $id) = split /\|/, $line;
		$ev{$t} = $id;
	}
}
is(scalar(keys %ev), 13, 'enqueued one event per failure scenario');

# The transport failures: once the first attempt failed, the receiver answers
# 200 again and the retry delivers.  (Retries every 2 s leave time to switch;
# a later switch costs one more failed attempt, which the checks allow.)
my %transport = (
	stall   => qr/Timeout was reached|timed out/i,
	close   => qr/Server returned nothing|Failure when receiving data/i,
	garbage => qr/Unsupported protocol|HTTP\/0\.9/i,
	slow    => qr/Timeout was reached|timed out/i);
for my $s (qw(stall close garbage slow))
{
	wait_attempts($node, "ep_$s", 1);
	rx_mode($rx{$s}, { mode => 'ok' });
}


# 4 (the guard node) goes at the same time.
my @ssrf = (
	[ 'ssrf_loopback',  "http://127.0.0.1:$rx{ssrf}{port}/hook",          'loopback' ],
	[ 'ssrf_localhost', "http://localhost:$rx{ssrf}{port}/hook",          'loopback' ],
	[ 'ssrf_v6_loopback', "http://[::1]:$rx{ssrf}{port}/hook",            'loopback' ],
	[ 'ssrf_private',   'http://10.0.0.1/hook',                           'private' ],
	[ 'ssrf_metadata',  'http://169.254.169.254/latest/meta-data/',       'cloud metadata' ],
	[ 'ssrf_cgnat',     'http://100.64.0.1/hook',                         'carrier-grade NAT' ],
	[ 'ssrf_multicast', 'http://224.0.0.1/hook',                          'multicast' ],
	[ 'ssrf_zero',      "http://0.0.0.0:$rx{ssrf}{port}/hook",            'unspecified' ],
	[ 'ssrf_v4mapped',  "http://[::ffff:127.0.0.1]:$rx{ssrf}{port}/hook", 'loopback' ],);
q1($guard, "SELECT revenue_engine.register_event_type('t_ssrf')");
create_endpoint($guard, $_->[0], $_->[1], 't_ssrf',
	connect_timeout_ms => 1000, timeout_ms => 2000, retry_schedule => q('{1 second}'))
  for @ssrf;
my $ssrf_event = q1($guard, "SELECT revenue_engine.enqueue_event(NULL, 't_ssrf', '{}')");

# 5. Sends through a channel.
q1($node, qq{
	SELECT revenue_engine.create_channel('ch_provider', '$rx{sends}{base}/v1/messages',
	         body_template => '{"messaging_product": "whatsapp"}',
	         message_id_path => '{messages,0,id}', retry_schedule => '{1 second}')});
my $payload = '{"to": "+15550001", "type": "text", "text": {"body": "hello"}}';
my $send1 = q1($node, "SELECT revenue_engine.enqueue_send('ch_provider', '$payload', 'order-42')");
my $send2 = q1($node, "SELECT revenue_engine.enqueue_send('ch_provider', '$payload', 'order-42')");

# 7. An event no endpoint subscribes to, then one more; an endpoint created
# later with deliver_pending_since = the second one's creation picks up only it.
my $orphan1 = q1($node, "SELECT revenue_engine.enqueue_event(NULL, 't_orphan', '{\"n\": 1}')");
usleep(20_000);
my $orphan2 = q1($node, "SELECT revenue_engine.enqueue_event(NULL, 't_orphan', '{\"n\": 2}')");
is(q1($node, "SELECT count(*) FROM revenue_engine.deliveries WHERE event_id IN ('$orphan1', '$orphan2')"),
	'0', 'no endpoint subscribes to t_orphan (ep_other filters t_other): no delivery rows');

# ===========================================================================
# 2. The state machine, failure class by failure class.

# Retry delays: attempt n+1 starts retry_schedule[n] +-10% after attempt n
# (never earlier; later by at most the slack of a slow machine).
my $SLACK = 1.0;
sub check_delays
{
	my ($what, $att, @schedule) = @_;
	for my $i (0 .. $#schedule)
	{
		last if $i + 1 > $#$att;
		my $d = $att->[ $i + 1 ]{t} - $att->[$i]{t};
		my ($lo, $hi) = (0.9 * $schedule[$i], 1.1 * $schedule[$i] + $SLACK);
		ok($d >= $lo && $d <= $hi,
			sprintf('%s: attempt %d came %.2f s after attempt %d (schedule %g s: %.2f..%.2f)',
				$what, $i + 2, $d, $i + 1, $schedule[$i], $lo, $hi));
	}
}

# 500, 500, 200 -> sent at the third attempt
ok(wait_delivery($node, 'ep_seq500', $ev{t_seq500}, 'sent'), '500,500,200: the delivery becomes sent');
{
	my $att = attempts($node, 'ep_seq500');
	is(join(',', map { "$_->{attempt}:$_->{status}:$_->{outcome}" } @$att),
		'1:500:retry,2:500:retry,3:200:sent', '500,500,200: three attempts logged: retry, retry, sent');
	check_delays('500,500,200', $att, 1, 2);
	is(delivery($node, 'ep_seq500', $ev{t_seq500}), 'sent|3|200|', '500,500,200: delivery sent after 3 attempts, no error');
	is(event_status($node, $ev{t_seq500}), 'sent', '500,500,200: webhook_events.status is sent');
	my $reqs = requests_are_for($rx{seq}, $ev{t_seq500}, '500,500,200');
	is(scalar(@$reqs), 3, '500,500,200: the receiver got 3 requests (the same webhook-id each time)');
}

# always 500 -> dead after 1 + 2 attempts
ok(wait_delivery($node, 'ep_500', $ev{t_500}, 'dead'), 'always 500: the delivery becomes dead');
{
	my $att = attempts($node, 'ep_500');
	is(join(',', map { "$_->{attempt}:$_->{status}:$_->{outcome}" } @$att),
		'1:500:retry,2:500:retry,3:500:dead', 'always 500: 1 + len(schedule) = 3 attempts: retry, retry, dead');
	check_delays('always 500', $att, 1, 2);
	is(delivery($node, 'ep_500', $ev{t_500}), 'dead|3|500|HTTP 500', 'always 500: delivery dead, last_status 500, last_error HTTP 500');
	is(event_status($node, $ev{t_500}), 'failed', 'always 500: webhook_events.status is failed');
	is(q1($node, "SELECT failing_since IS NOT NULL FROM revenue_engine.endpoints WHERE name = 'ep_500'"),
		't', 'always 500: the endpoint is marked failing (failing_since set)');
	is(scalar(@{ requests_are_for($rx{r500}, $ev{t_500}, 'always 500') }), 3,
		'always 500: the receiver got 3 requests');
}

# 429 with Retry-After: 3 while the schedule says 1 s
ok(wait_delivery($node, 'ep_429', $ev{t_429}, 'sent'), '429: the delivery becomes sent at the retry');
{
	my $att = attempts($node, 'ep_429');
	is(join(',', map { "$_->{attempt}:$_->{status}:$_->{outcome}" } @$att),
		'1:429:retry,2:200:sent', '429: retried, then sent');
	my $d = @$att == 2 ? $att->[1]{t} - $att->[0]{t} : 0;
	ok($d >= 3.0 && $d <= 3.0 + 1.1 * 1 + $SLACK,
		sprintf('429: the retry waited %.2f s: Retry-After 3 s, not the 1 s schedule', $d));
	is(scalar(@{ requests_are_for($rx{r429}, $ev{t_429}, '429') }), 2, '429: the receiver got 2 requests');
}

# 429 with Retry-After as an HTTP-date
ok(wait_delivery($node, 'ep_429d', $ev{t_429d}, 'sent'), '429 (HTTP-date): the delivery becomes sent at the retry');
{
	my $att = attempts($node, 'ep_429d');
	is(join(',', map { "$_->{attempt}:$_->{status}:$_->{outcome}" } @$att),
		'1:429:retry,2:200:sent', '429 (HTTP-date): retried, then sent');
	my $d = @$att == 2 ? $att->[1]{t} - $att->[0]{t} : 0;
	ok($d >= 2.0 && $d <= 4.0 + 1.1 * 1 + $SLACK,
		sprintf('429 (HTTP-date): the retry waited %.2f s: until the date, not the 1 s schedule', $d));
}

# A response body keeps its UTF-8; bytes that are not UTF-8 are escaped, not rewritten
ok(wait_delivery($node, 'ep_bytes', $ev{t_bytes}, 'dead'), 'bytes: the delivery becomes dead (400)');
SKIP:
{
	skip 'the database encoding is not UTF8', 1 if q1($node, 'SHOW server_encoding') ne 'UTF8';
	is(q1($node, q{SELECT a.response_body FROM revenue_engine.delivery_attempts a
		  JOIN revenue_engine.endpoints e ON e.id = a.endpoint_id WHERE e.name = 'ep_bytes'}),
		'café ✓ \\xff\\xfe\\x00 \\xc3 end',
		'bytes: response_body keeps é and ✓, and escapes 0xff 0xfe NUL and a cut-off 0xc3');
}

# 400 -> dead at once
ok(wait_delivery($node, 'ep_400', $ev{t_400}, 'dead'), '400: the delivery becomes dead');
{
	my $att = attempts($node, 'ep_400');
	is(join(',', map { "$_->{attempt}:$_->{status}:$_->{outcome}" } @$att), '1:400:dead',
		'400: one attempt, dead (a 4xx other than 408/429 is not retried)');
	is(delivery($node, 'ep_400', $ev{t_400}), 'dead|1|400|HTTP 400', '400: delivery dead after 1 attempt');
	is(event_status($node, $ev{t_400}), 'failed', '400: webhook_events.status is failed');
	is(q1($node, "SELECT enabled FROM revenue_engine.endpoints WHERE name = 'ep_400'"), 't',
		'400: the endpoint stays enabled');
}

# 410 -> dead and the endpoint disabled
ok(wait_delivery($node, 'ep_410', $ev{t_410}, 'dead'), '410: the delivery becomes dead');
{
	my $att = attempts($node, 'ep_410');
	is(join(',', map { "$_->{attempt}:$_->{status}:$_->{outcome}" } @$att), '1:410:dead',
		'410: one attempt, dead');
	is(q1($node, q{SELECT enabled || '|' || coalesce(disabled_reason, '') || '|' || (disabled_at IS NOT NULL)
	                 FROM revenue_engine.endpoints WHERE name = 'ep_410'}),
		'false|the endpoint answered 410 Gone|true', '410: the endpoint is disabled with a reason');
	like(q1($node, "SELECT disabled_reason FROM revenue_engine.endpoint_stats WHERE name = 'ep_410'"),
		qr/410/, '410: endpoint_stats shows the reason');
}
# a later event for the disabled endpoint waits (checked at the end)
my $ev410b = q1($node, "SELECT revenue_engine.enqueue_event(NULL, 't_410', '{}')");

# 302 -> not followed; retried like 3xx, dead after the schedule
ok(wait_delivery($node, 'ep_302', $ev{t_302}, 'dead'), '302: the delivery becomes dead after its retries');
{
	my $att = attempts($node, 'ep_302');
	is(join(',', map { "$_->{attempt}:$_->{status}:$_->{outcome}" } @$att),
		'1:302:retry,2:302:dead', '302: each attempt recorded status 302; retried, then dead');
	my $reqs = rx_requests($rx{r302});
	is(scalar(@$reqs), scalar(@$att), '302: the receiver got exactly one request per attempt');
	is(scalar(grep { $_->{path} ne '/hook' } @$reqs), 0,
		'302: no request went to the Location (/elsewhere): the redirect was not followed');
	is(rx_stats($rx{r302})->{requests}, 2, '302: 2 requests in all');
}

# stall, close, garbage, slow: failed attempts retried, then sent
for my $s (qw(stall close garbage slow))
{
	ok(wait_delivery($node, "ep_$s", $ev{"t_$s"}, 'sent'), "$s: the delivery becomes sent after the receiver recovers");
	my $att = attempts($node, "ep_$s");
	my @failed = @$att[ 0 .. $#$att - 1 ];
	ok(@failed >= 1 && @failed <= 5, "$s: " . scalar(@failed) . ' failed attempt(s) before the 200');
	is(scalar(grep { $_->{outcome} ne 'retry' } @failed), 0, "$s: every failed attempt was marked retry");
	is(scalar(grep { $_->{error} !~ $transport{$s} } @failed), 0,
		"$s: every failed attempt's error names the failure")
	  or diag(explain([ map { $_->{error} } @failed ]));
	is("$att->[-1]{status}:$att->[-1]{outcome}", '200:sent', "$s: the last attempt got 200, sent");
	is(scalar(@{ requests_are_for($rx{$s}, $ev{"t_$s"}, $s) }), scalar(@$att),
		"$s: the receiver got one request per attempt");
	if ($s eq 'stall')
	{
		ok($failed[0]{latency} >= 450 && $failed[0]{latency} < 3000,
			"stall: the attempt was cut at the 500 ms timeout ($failed[0]{latency} ms), not after the 4 s stall");
		is($failed[0]{status}, '', 'stall: no status recorded for the timed-out attempt');
	}
	if ($s eq 'slow')
	{
		ok($failed[0]{latency} >= 900 && $failed[0]{latency} < 3500,
			"slow: the trickled answer was cut at the 1 s timeout ($failed[0]{latency} ms), not after 4 s");
	}
	if ($s eq 'close' || $s eq 'garbage')
	{
		is($failed[0]{status}, '', "$s: no HTTP status recorded");
	}
}
is(worker_pid($node), $worker_pid,
	'the worker survived timeouts, closed connections, garbage and trickled answers (same pid)');

# huge body: status recorded, body capped
ok(wait_delivery($node, 'ep_huge', $ev{t_huge}, 'sent'), 'huge: a 200 with a 5 MB body counts as sent');
{
	my $att = attempts($node, 'ep_huge');
	is(scalar(@$att), 1, 'huge: one attempt');
	is($att->[0]{status}, '200', 'huge: status 200 recorded');
	ok($att->[0]{body_len} > 0 && $att->[0]{body_len} <= 20480,
		"huge: response_body kept $att->[0]{body_len} bytes (at most 20480)");
	is(q1($node, q{SELECT response_body ~ '^x+$' FROM revenue_engine.delivery_attempts a
	                JOIN revenue_engine.endpoints e ON e.id = a.endpoint_id WHERE e.name = 'ep_huge'}),
		't', 'huge: the kept body is the start of the answer');
}

# ===========================================================================
# 3. Redrive the dead delivery of ep_500 once the receiver answers 200.

rx_mode($rx{r500}, { mode => 'ok' });
is(q1($node, "SELECT revenue_engine.redrive('ep_500', since => now())"), '0',
	'redrive: a range after the delivery was created requeues nothing');
is(delivery($node, 'ep_500', $ev{t_500}), 'dead|3|500|HTTP 500', 'redrive: ... and the delivery stays dead');
is(q1($node, "SELECT revenue_engine.redrive('ep_500')"), '1', 'redrive: requeues the dead delivery');
ok(wait_delivery($node, 'ep_500', $ev{t_500}, 'sent'), 'redrive: the delivery becomes sent');
is(delivery($node, 'ep_500', $ev{t_500}), 'sent|1|200|', 'redrive: attempts restarted: sent at the first new attempt');
is(event_status($node, $ev{t_500}), 'sent', 'redrive: webhook_events.status is sent');
is(q1($node, "SELECT failing_since IS NULL FROM revenue_engine.endpoints WHERE name = 'ep_500'"),
	't', 'redrive: the endpoint is no longer marked failing');
is(scalar(@{ requests_are_for($rx{r500}, $ev{t_500}, 'redrive') }), 4,
	'redrive: the receiver got the 3 failed requests and the redriven one');

# ===========================================================================
# 4. SSRF guard (guard node: revenue_engine.http_allow_private = off).

ok($guard->poll_query_until('postgres',
		"SELECT count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0 AND count(*) = "
		  . scalar(@ssrf) . " FROM revenue_engine.deliveries WHERE event_id = '$ssrf_event'"),
	'ssrf: every delivery to an internal address is finished');
for my $s (@ssrf)
{
	my ($ep, $url, $class) = @$s;
	my ($status, $attempts, $code, $err) = split /\|/, delivery($guard, $ep, $ssrf_event), 4;
	is("$status/$attempts", 'dead/1', "ssrf: $url is dead after one attempt");
	like($err // '', qr/is not allowed \(\Q$class\E\)/, "ssrf: $url refused as $class")
	  or diag("last_error: " . ($err // 'NULL'));
	my $att = attempts($guard, $ep);
	ok(@$att == 1 && $att->[0]{latency} < 1000 && $att->[0]{status} eq '',
		"ssrf: $url was refused before connecting (no status, under the 1 s connect timeout)");
}
is(rx_stats($rx{ssrf})->{requests}, 0, 'ssrf: the receiver behind the loopback URLs got nothing');
is(event_status($guard, $ssrf_event), 'failed', 'ssrf: the event is failed');

# ===========================================================================
# 5. Sends.

is($send2, $send1, 'sends: the same idempotency key returns the same send id');
ok($node->poll_query_until('postgres', "SELECT status FROM revenue_engine.sends WHERE id = $send1", 'sent'),
	'sends: the send becomes sent');
is(q1($node, "SELECT count(*) FROM revenue_engine.sends WHERE idempotency_key = 'order-42'"), '1',
	'sends: one send row for the idempotency key');
{
	my ($pmid, $resp) = split /\|/,
	  q1($node, "SELECT provider_message_id, response_body FROM revenue_engine.sends WHERE id = $send1"), 2;
	like($pmid // '', qr/^wamid\.\d+$/, "sends: provider_message_id is $pmid");
	my $r = eval { $JSON->decode($resp) } // {};
	is($pmid, $r->{messages}[0]{id}, 'sends: provider_message_id is messages[0].id of the answer');
	my $reqs = rx_requests($rx{sends});
	is(scalar(@$reqs), 1, 'sends: the provider got one request');
	my $req = $reqs->[0] // {};
	is("$req->{method} $req->{path}", 'POST /v1/messages', 'sends: POST to the channel URL');
	is_deeply(eval { $JSON->decode($req->{body}) },
		{ messaging_product => 'whatsapp', to => '+15550001', type => 'text', text => { body => 'hello' } },
		'sends: the body is body_template merged with the payload');
	like($req->{headers}{'idempotency-key'} // '', qr/\S.*-\Q$send1\E$/,
		'sends: an Idempotency-Key header naming the send is sent');
	is(q1($node, "SELECT revenue_engine.enqueue_send('ch_provider', '$payload', 'order-42')"), $send1,
		'sends: enqueueing the key again after delivery returns the same id');
}

# ===========================================================================
# 6. Rate limit: 5 per second.  Alone on the main node now, so the worker's
# CPU time while it waits for tokens can be measured too.

# CPU seconds a process used so far (Linux /proc), undef elsewhere.
sub cpu_seconds
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return undef;
	my $stat = <$fh>;
	close $fh;
	$stat =~ s/^.*\)\s+//s;
	my @f = split ' ', $stat;
	return ($f[11] + $f[12]) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

my $cpu0 = cpu_seconds($worker_pid);
my $wall0 = Time::HiRes::time();
q1($node, q{SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 't_rate', jsonb_build_object('n', g)))
              FROM generate_series(1, 20) g});
ok($node->poll_query_until('postgres', q{
		SELECT count(*) FILTER (WHERE d.status = 'sent') = 20 FROM revenue_engine.deliveries d
		  JOIN revenue_engine.endpoints e ON e.id = d.endpoint_id WHERE e.name = 'ep_rate'}),
	'rate: the 20 events are delivered');
{
	my $att = attempts($node, 'ep_rate');
	my @t = sort { $a <=> $b } map { $_->{t} } @$att;
	is(scalar(@t), 20, 'rate: 20 attempts');
	my $span = @t ? $t[-1] - $t[0] : 0;
	ok($span >= 2.8, sprintf('rate: 20 events at 5/s took %.2f s (a burst of 5, then 15 at 5/s: about 3 s)', $span));
	ok($span < 20, 'rate: ... but were not stuck');
	my $worst = 0;
	for my $i (0 .. $#t)
	{
		my $n = grep { $_ >= $t[$i] && $_ < $t[$i] + 1 } @t;
		$worst = $n if $n > $worst;
	}
	ok($worst <= 11, "rate: at most $worst attempts in any 1 s window (bucket 5 + 5 refilled, +1 for scheduling)");
	my $st = rx_stats($rx{rate});
	is("$st->{requests}/$st->{unique_webhook_ids}/$st->{duplicates}/$st->{verified_ok}", '20/20/0/20',
		'rate: the receiver got 20 requests, 20 webhook-ids, no duplicate, all verified');

	# Waiting for tokens should cost next to nothing: 20 requests take a few
	# ms of CPU.  A worker that busy-waits burns a core for the whole span.
	my $cpu1 = cpu_seconds($worker_pid);
	my $wall = Time::HiRes::time() - $wall0;
  SKIP:
	{
		skip 'no /proc/<pid>/stat', 1 unless defined $cpu0 && defined $cpu1;
		my $cpu = $cpu1 - $cpu0;
		ok($cpu < 0.2 * $wall,
			sprintf('rate: the worker does not busy-wait for tokens (%.2f s CPU in %.2f s)', $cpu, $wall));
	}
}

# ===========================================================================
# 7. deliver_pending_since.

is(event_status($node, $orphan1) . '/' . event_status($node, $orphan2), 'pending/pending',
	'pending since: both unsubscribed events are still pending');
create_endpoint($node, 'ep_late', $rx{orphan}{url}, 't_orphan',
	deliver_pending_since => "(SELECT created_at FROM revenue_engine.webhook_events WHERE id = '$orphan2')");
ok(wait_delivery($node, 'ep_late', $orphan2, 'sent'),
	'pending since: an endpoint created with deliver_pending_since delivers the pending event');
is(q1($node, "SELECT count(*) FROM revenue_engine.deliveries WHERE event_id = '$orphan1'"), '0',
	'pending since: the event created before deliver_pending_since gets no delivery');
is(event_status($node, $orphan2), 'sent', 'pending since: webhook_events.status is sent');
{
	my $reqs = rx_requests($rx{orphan});
	is(join(',', map { $_->{webhook_id} } @$reqs), $orphan2,
		'pending since: the receiver got exactly that event (nothing for ep_other)');
}

# ===========================================================================
# Nothing more arrived late: dead is final, disabled endpoints wait.

is(rx_stats($rx{r400})->{requests}, 1, '400: still exactly one request, long after');
is(rx_stats($rx{r410})->{requests}, 1, '410: the disabled endpoint got nothing more');
is(delivery($node, 'ep_410', $ev410b), 'pending|0||', '410: a later event for the disabled endpoint waits, pending');
is(rx_stats($rx{sends})->{requests}, 1, 'sends: still one request after the repeated enqueue');
is(rx_stats($rx{e2e})->{requests}, 1, 'e2e: still exactly one request');

# ===========================================================================
# 4 again, on the main node: turning http_allow_private off reaches the
# running worker through a reload, and back on.  ep_pool delivers once before,
# so the worker holds a keep-alive connection to its receiver; ep_fresh's
# receiver was never contacted.

q1($node, "SELECT revenue_engine.register_event_type('$_')") for qw(t_pool t_fresh);
create_endpoint($node, 'ep_pool',  $rx{pool}{url},  't_pool',  retry_schedule => $fast);
create_endpoint($node, 'ep_fresh', $rx{fresh}{url}, 't_fresh', retry_schedule => $fast);
my $pool_before = q1($node, "SELECT revenue_engine.enqueue_event(NULL, 't_pool', '{}')");
ok(wait_delivery($node, 'ep_pool', $pool_before, 'sent'), 'reload: ep_pool delivers while private addresses are allowed');

q1($node, 'ALTER SYSTEM SET revenue_engine.http_allow_private = off');
q1($node, 'SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', 'SHOW revenue_engine.http_allow_private', 'off'),
	'reload: http_allow_private is off');
my ($fresh_event, $pool_event) = split /\n/, q1($node, q{
	SELECT revenue_engine.enqueue_event(NULL, t, '{}') FROM unnest(ARRAY['t_fresh', 't_pool']) t});
for my $c ([ 'ep_fresh', $fresh_event, 'fresh', 0 ], [ 'ep_pool', $pool_event, 'pool', 1 ])
{
	my ($ep, $event, $r, $before) = @$c;
	ok($node->poll_query_until('postgres', qq{
			SELECT d.status IN ('dead', 'sent') FROM revenue_engine.deliveries d
			  JOIN revenue_engine.endpoints e ON e.id = d.endpoint_id
			 WHERE e.name = '$ep' AND d.event_id = '$event'}),
		"reload: ${ep}'s new delivery is finished");
	my ($status, $n, $code, $err) = split /\|/, delivery($node, $ep, $event), 4;
	is($status, 'dead', "reload: the worker now refuses $ep at 127.0.0.1");
	like($err // '', qr/address 127\.0\.0\.1 is not allowed \(loopback\)/,
		"reload: ${ep}'s last_error says loopback is not allowed");
	is(rx_stats($rx{$r})->{requests}, $before, "reload: ${ep}'s receiver got nothing new");
}

q1($node, 'ALTER SYSTEM RESET revenue_engine.http_allow_private');
q1($node, 'SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', 'SHOW revenue_engine.http_allow_private', 'on'),
	'reload: http_allow_private is on again');
q1($node, "SELECT revenue_engine.redrive('$_')") for qw(ep_fresh ep_pool);
ok(wait_delivery($node, 'ep_fresh', $fresh_event, 'sent'), 'reload: ep_fresh delivers once allowed again (after redrive)');
ok(wait_delivery($node, 'ep_pool', $pool_event, 'sent'), 'reload: ep_pool delivers once allowed again');

# ===========================================================================
is(worker_pid($node), $worker_pid, 'the main node\'s worker never restarted');
for my $n ($node, $guard)
{
	my $log = slurp_file($n->logfile);
	unlike($log, qr/terminated by signal|PANIC|server process .* exited with exit code [^0]/,
		$n->name . ': no crash in the server log');
}

$node->stop;
$guard->stop;
stop_receivers();
done_testing();
