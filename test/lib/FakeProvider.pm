# The campaign end-to-end test's fake provider (test/lib/fake_provider.py):
# started on a free port of 127.0.0.1, stopped when the test ends.
#
#   require "$root/test/lib/FakeProvider.pm";
#   my $fp = FakeProvider::start($root, $tmp);
#   $fp->{base}                         # http://127.0.0.1:PORT
#   FakeProvider::delay($fp, 0.01, 0.05) # each answer waits 10-50 ms
#   FakeProvider::requests($fp)         # every request, oldest first:
#       { seq, time, answered_at, path, idempotency_key, headers, body, provider_id }
#   FakeProvider::stats($fp)            # { requests, keys }
package FakeProvider;

use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Utils;

my @started;
END
{
	my $rc = $?;
	for my $fp (@started) { eval { $fp->{h}->kill_kill(grace => 5) if $fp->{h}; }; }
	$? = $rc;
}

sub http
{
	return HTTP::Tiny->new(timeout => 60, proxy => undef, http_proxy => undef,
		https_proxy => undef, no_proxy => [ '127.0.0.1', 'localhost' ]);
}

sub start
{
	my ($root, $tmp, $name) = @_;
	$name //= 'provider';
	my $fp = { port_file => "$tmp/$name.port", log => "$tmp/$name.jsonl", http => http() };
	$fp->{h} = IPC::Run::start(
		[ 'python3', "$root/test/lib/fake_provider.py", '--port', '0',
		  '--port-file', $fp->{port_file}, '--log', $fp->{log} ],
		'<', \undef, '>', "$tmp/$name.out", '2>', "$tmp/$name.err");
	push @started, $fp;
	for (1 .. 600)
	{
		last if -s $fp->{port_file};
		usleep(50_000);
	}
	die "fake provider did not start: " . slurp_file("$tmp/$name.err") unless -s $fp->{port_file};
	chomp($fp->{port} = slurp_file($fp->{port_file}));
	$fp->{base} = "http://127.0.0.1:$fp->{port}";
	return $fp;
}

sub _call
{
	my ($fp, $method, $path, $obj) = @_;
	my $res = $fp->{http}->request($method, "$fp->{base}/_control/$path",
		defined $obj
		? { content => encode_json($obj), headers => { 'content-type' => 'application/json' } }
		: {});
	die "fake provider: $method $path: $res->{status} $res->{content}" unless $res->{success};
	return decode_json($res->{content});
}

sub delay    { my ($fp, $min, $max) = @_; return _call($fp, 'POST', 'delay', { min => $min, max => $max // $min }); }
sub stats    { return _call($_[0], 'GET', 'stats'); }
sub requests { return _call($_[0], 'GET', 'requests?since=' . ($_[1] // 0)); }

1;
