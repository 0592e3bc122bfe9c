# What the worker and the parking of statuses do with a live server:
# 1. a provider's response is stored as it came when it is valid UTF-8 (the
#    message id with its accents and CJK), and with its invalid bytes written
#    \xNN (nothing valid replaced, no message id taken from it) when not;
# 2. a status parked in a race with its message id landing from an ordinary
#    session (not the worker) is applied by the worker's sweep within seconds,
#    whichever of the two commits first: both wake the worker at commit.
use strict;
use warnings;
use IPC::Run;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = PostgreSQL::Test::Utils::tempdir;

# A provider that answers /utf8 with a valid UTF-8 body and /invalid with
# bytes that are not UTF-8 (0xff 0xfe in the id, a NUL, a backslash).
my $server = <<'PY';
import http.server, sys
BODIES = {
    "/utf8": '{"messaging_product": "whatsapp", "messages": [{"id": "wamid.\u00c4\u00d6-\u65e5\u672c-\U0001F600"}]}'.encode("utf-8"),
    "/invalid": b'{"messages": [{"id": "wamid.bad\xff\xfe"}], "note": "a\\\\b\x00c"}',
}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        b = BODIES[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
open(my $fh, '>', "$tmp/provider.py") or die;
print $fh $server;
close $fh;
my $srv = IPC::Run::start([ 'python3', "$tmp/provider.py", "$tmp/port" ],
	'<', \undef, '>', "$tmp/srv.out", '2>', "$tmp/srv.err");
END { my $rc = $?; eval { $srv->kill_kill(grace => 5) } if $srv; $? = $rc; }
for (1 .. 600) { last if -s "$tmp/port"; usleep(50_000); }
chomp(my $port = slurp_file("$tmp/port"));

my $node = PostgreSQL::Test::Cluster->new('status_bytes');
# UTF-8, as the databases of WhatsApp's users are (SQL_ASCII would take any byte)
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'revenue_engine'
revenue_engine.http_allow_private = on
revenue_engine.parked_sweep_interval = 500
});
$node->start;
$node->safe_psql('postgres', qq{
CREATE EXTENSION revenue_engine;
SELECT revenue_engine.create_channel('utf8', 'http://127.0.0.1:$port/utf8', message_id_path => '{messages,0,id}');
SELECT revenue_engine.create_channel('invalid', 'http://127.0.0.1:$port/invalid', message_id_path => '{messages,0,id}');
SELECT revenue_engine.create_blast('utf8', 'utf8', '["+14155550101"]', message => 'hi');
SELECT revenue_engine.create_blast('invalid', 'invalid', '["+14155550102"]', message => 'hi');
});

# 1. Bytes as received
ok($node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM revenue_engine.sends WHERE status = 'sent'}),
	'both sends are sent');
is($node->safe_psql('postgres', q{
	SELECT r.provider_message_id || '|' || encode(convert_to(r.provider_message_id, 'UTF8'), 'hex') || '|' || r.status
	  FROM revenue_engine.blast_recipients r WHERE r.phone = '+14155550101'}),
	'wamid.ÄÖ-日本-😀|77616d69642ec384c3962de697a5e69cac2df09f9880|sent',
	'a UTF-8 message id lands on its recipient byte for byte');
is($node->safe_psql('postgres', q{
	SELECT s.response_body = '{"messaging_product": "whatsapp", "messages": [{"id": "wamid.ÄÖ-日本-😀"}]}'
	       AND a.response_body = s.response_body
	  FROM revenue_engine.sends s
	  JOIN revenue_engine.delivery_attempts a ON a.send_id = s.id
	 WHERE s.payload->>'to' = '+14155550101'}),
	't', 'a UTF-8 response body is stored as it came, in the send and its attempt');
is($node->safe_psql('postgres', q{
	SELECT s.response_body || '|' || coalesce(s.provider_message_id, 'no id') || '|' || r.status
	       || '|' || coalesce(r.provider_message_id, 'no id') || '|' || (a.response_body = s.response_body)
	  FROM revenue_engine.sends s
	  JOIN revenue_engine.blast_recipients r ON r.id = s.recipient_id
	  JOIN revenue_engine.delivery_attempts a ON a.send_id = s.id
	 WHERE s.payload->>'to' = '+14155550102'}),
	'{"messages": [{"id": "wamid.bad\xff\xfe"}], "note": "a\\\\\\\\b\x00c"}|no id|sent|no id|true',
	'invalid bytes and NUL are written \xNN and a backslash \\\\; no message id is taken from such a body');

# 2. A status parked in a race with its id landing from an ordinary session.
$node->safe_psql('postgres', q{
SELECT revenue_engine.create_channel('held', 'http://127.0.0.1:1/never', enabled => false);
SELECT revenue_engine.create_blast('held', 'race', '["+14155550201", "+14155550202"]', message => 'hi');
});

# The status is parked in a transaction held open (it holds the id's lock);
# the id lands from another session meanwhile and finds the lock taken.
sub race
{
	my ($phone, $mid, $parker_commits_first) = @_;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$in, '>', \$out, '2>', \$err);
	$in .= "BEGIN;\nSELECT revenue_engine.record_message_status('$mid', 'read', now(), 'webhook');\n";
	$h->pump until $out =~ /parked/ || $err ne '';
	my $land = qq{
		UPDATE revenue_engine.sends s SET status = 'sending'
		  FROM revenue_engine.blast_recipients r WHERE r.id = s.recipient_id AND r.phone = '$phone';
		UPDATE revenue_engine.sends s SET status = 'sent', sent_at = now(), provider_message_id = '$mid'
		  FROM revenue_engine.blast_recipients r WHERE r.id = s.recipient_id AND r.phone = '$phone';
	};
	if ($parker_commits_first)
	{
		# the landing waits in an open transaction until the parker committed
		my ($in2, $out2, $err2) = ('', '', '');
		my $h2 = IPC::Run::start([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
			'<', \$in2, '>', \$out2, '2>', \$err2);
		$in2 .= "BEGIN;\n$land\nSELECT 'landed';\n";
		$h2->pump until $out2 =~ /landed/ || $err2 ne '';
		$in .= "COMMIT;\n\\q\n";
		$h->finish;
		$in2 .= "COMMIT;\n\\q\n";
		$h2->finish;
		is($err2, '', 'the landing session ran without error');
	}
	else
	{
		$node->safe_psql('postgres', $land);
		$in .= "COMMIT;\n\\q\n";
		$h->finish;
	}
	is($err, '', 'the parking session ran without error');
}

race('+14155550201', 'wamid.RACE1', 1);
ok($node->poll_query_until('postgres', q{
	SELECT status = 'read' FROM revenue_engine.blast_recipients WHERE provider_message_id = 'wamid.RACE1'}),
	'parked, then landed from another session that committed last: the worker applied the status');
race('+14155550202', 'wamid.RACE2', 0);
ok($node->poll_query_until('postgres', q{
	SELECT status = 'read' FROM revenue_engine.blast_recipients WHERE provider_message_id = 'wamid.RACE2'}),
	'landed from another session that committed first, the parker last: the worker applied the status');
is($node->safe_psql('postgres', q{SELECT count(*) FROM revenue_engine.status_parked}), '0', 'nothing stays parked');

$node->stop;
done_testing();
