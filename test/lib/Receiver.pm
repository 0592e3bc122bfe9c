# The TAP tests' local HTTP receiver (test/receiver/receiver.py): started on
# a free port of 127.0.0.1, stopped when the test ends, read through its
# control API.  One piece of scaffolding for every test that needs it.
#
#   require "$root/test/lib/Receiver.pm";
#   my $rx = Receiver::start($root, $tmp, $secret);   # extra receiver.py args may follow
#   $rx->{base}                     # http://127.0.0.1:PORT
#   Receiver::requests($rx)         # every request it saw, oldest first
#   Receiver::count_by_id($rx, '/hook')   # POSTs to a path, per webhook id
package Receiver;

use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Utils;

my @started;
END { for my $rx (@started) { eval { $rx->{h}->kill_kill(grace => 5) if $rx->{h}; }; } }

# An HTTP client that never goes through a proxy to 127.0.0.1.
sub http
{
	return HTTP::Tiny->new(
		timeout     => 30,
		proxy       => undef,
		http_proxy  => undef,
		https_proxy => undef,
		no_proxy    => [ '127.0.0.1', 'localhost' ]);
}

sub start
{
	my ($root, $tmp, $secret, @extra) = @_;
	my $rx = {
		port_file => "$tmp/rx.port",
		log       => "$tmp/rx.jsonl",
		http      => http(),
	};
	$rx->{h} = IPC::Run::start(
		[
			'python3', "$root/test/receiver/receiver.py", '--port', '0', '--port-file',
			$rx->{port_file}, '--log', $rx->{log}, '--secret', $secret, @extra
		],
		'<', \undef, '>', "$tmp/rx.out", '2>', "$tmp/rx.err");
	push @started, $rx;
	for (1 .. 1200)
	{
		last if -s $rx->{port_file};
		usleep(50_000);
	}
	die "receiver did not start: " . slurp_file("$tmp/rx.err") unless -s $rx->{port_file};
	chomp($rx->{port} = slurp_file($rx->{port_file}));
	$rx->{base} = "http://127.0.0.1:$rx->{port}";
	return $rx;
}

sub requests
{
	my ($rx) = @_;
	my $res = $rx->{http}->get("$rx->{base}/_control/requests?since=0");
	die "receiver: $res->{status} $res->{content}" unless $res->{success};
	my $r = decode_json($res->{content});
	return ref $r eq 'HASH' ? $r->{requests} : $r;
}

sub count_by_id
{
	my ($rx, $path) = @_;
	my %n;
	$n{ $_->{webhook_id} // '' }++ for grep { $_->{path} eq $path } @{ requests($rx) };
	return \%n;
}

1;
