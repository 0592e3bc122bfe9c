#!/usr/bin/perl
# One client of the campaign end-to-end test (test/t/060_campaigns_e2e.pl):
# runs its operations, each at its moment, each as one psql process, and
# survives a crash of the server in the middle.
#
#   perl campaign_client.pl CONNSTR T0 OPS_FILE RESULTS_FILE DEADLINE_SECONDS
#
# OPS_FILE: one JSON object per line {"id": n, "at": seconds after T0 (epoch),
# "sql": "...", "marker": "SQL returning 1 if the op committed" or null}.
# Each op's SQL runs with ON_ERROR_STOP in its own psql.  When psql fails
# (the server crashed or is recovering, or the op raised an error) the client
# asks the marker query whether the op committed after all (the commit may
# have been lost with the connection's answer) and runs it again if not,
# until it succeeds or the deadline passes.  RESULTS_FILE gets one line per
# op: {"id", "ok", "tries", "started", "done", "error"}.
use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time sleep);

my ($connstr, $t0, $ops_file, $results_file, $deadline_s) = @ARGV;
die "usage: $0 CONNSTR T0 OPS RESULTS DEADLINE\n" unless defined $deadline_s;
my $deadline = $t0 + $deadline_s;

open my $in, '<', $ops_file or die "$ops_file: $!";
my @ops = map { decode_json($_) } grep { /\S/ } <$in>;
close $in;
@ops = sort { $a->{at} <=> $b->{at} || $a->{id} <=> $b->{id} } @ops;

open my $out, '>', $results_file or die "$results_file: $!";
$out->autoflush(1);

sub psql
{
	my ($sql) = @_;
	my ($stdout, $stderr) = ('', '');
	# IPC::Run dies when it cannot start psql (a fork refused on a loaded
	# machine): that is a failed try like a lost connection, not the end of
	# this client and of the results of its remaining operations.
	my $ok = eval {
		IPC::Run::run(
			[ 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $connstr ],
			'<', \$sql, '>', \$stdout, '2>', \$stderr);
	};
	return (0, '', "client: could not run psql: $@") if !defined $ok && $@;
	return ($ok, $stdout, $stderr);
}

for my $op (@ops)
{
	my $wait = $t0 + $op->{at} - time();
	sleep($wait) if $wait > 0;
	my %r = (id => $op->{id}, started => time(), tries => 0, ok => JSON::PP::false);
	while (1)
	{
		$r{tries}++;
		my ($ok, $stdout, $stderr) = psql($op->{sql});
		if ($ok)
		{
			$r{ok} = JSON::PP::true;
			$r{output} = $stdout;
			last;
		}
		$r{error} = $stderr;
		# An error the op raised itself (not a lost connection) is final.
		last if $stderr =~ /ERROR:/ && $stderr !~ /terminat|connection|shut|recovery|not yet accepting/i;
		if (defined $op->{marker})
		{
			# did it commit before the connection went away?
			my ($mok, $mout) = psql($op->{marker});
			if ($mok && $mout =~ /^1$/m)
			{
				$r{ok} = JSON::PP::true;
				$r{committed_unseen} = JSON::PP::true;
				last;
			}
		}
		last if time() > $deadline;
		sleep(0.3);
	}
	$r{done} = time();
	print $out encode_json(\%r), "\n";
}
close $out;
exit 0;
